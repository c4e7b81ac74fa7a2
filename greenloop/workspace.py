"""Where greenloop reads and writes: one project home, every path derived from it.

All file access goes through `Workspace.inside`, so no config value or batch file
name can make the pipeline read or write outside its data and state folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


class OutsideWorkspace(ValueError):
    """A path that resolves outside the folder it must stay in."""


@dataclass(frozen=True)
class Workspace:
    home: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike[str] | None = None) -> Workspace:
        chosen = home or os.environ.get("GREENLOOP_HOME") or os.getcwd()
        return cls(Path(chosen).resolve())

    def inside(self, base: Path, candidate: str | os.PathLike[str]) -> Path:
        """Resolve `candidate` (relative to `base`) and refuse it if it leaves `base`."""
        base = base.resolve()
        resolved = (base / candidate).resolve()
        if resolved != base and base not in resolved.parents:
            raise OutsideWorkspace(f"path {str(candidate)!r} resolves outside {base}")
        return resolved

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def state(self) -> Path:
        return self.home / "state"

    @property
    def ledger_path(self) -> Path:
        return self.state / "ledger.sqlite"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    def source(self, relative: str | os.PathLike[str]) -> Path:
        """A configured data path: relative to the home, and it must stay under data/."""
        return self.inside(self.data, (self.home / relative).resolve())

    def landing(self, dataset: str) -> Path:
        return self.data / "landing" / dataset

    def accepted(self, dataset: str) -> Path:
        return self.data / "accepted" / dataset

    def quarantine(self, dataset: str) -> Path:
        return self.data / "quarantine" / dataset

    def stream(self, dataset: str) -> Path:
        return self.data / "stream" / dataset

    def models(self, model_name: str) -> Path:
        return self.state / "models" / model_name

    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        return self.home / "mlartifacts"
