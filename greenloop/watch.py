"""Which landing files are complete: the rule behind `greenloop watch`.

A file in data/landing/<dataset>/ is reported once it is *complete*:

- its name is not a temporary one: hidden (`.name`), or ending in `.tmp`, `.part`,
  `.partial`, `.crdownload`, `.inprogress` — writers that write to such a name and
  `rename` when done (the atomic way) are picked up at the rename. Whatever its suffix:
  ingest reads CSV (plain, `.tsv`, `.txt`, or compressed: `.csv.gz`...) and Parquet, and
  refuses anything else with the reason (quarantine), so a file dropped in the wrong
  format is never silently ignored;
- its size and modification time were the same in two consecutive polls, and it is
  not empty — a writer still appending changes one of them between polls.

Each file is reported once per (name, size, mtime): a restart does not report it
again (the state file remembers), and a file rewritten in place with new content is
reported again (ingest dedupes by content hash anyway). Pure: no Prefect here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".inprogress")

Signature = tuple[int, int]  # (size_bytes, mtime_ns)


def is_candidate(path: Path) -> bool:
    """Not hidden and not a temporary name: a file meant for ingest, readable or not."""
    name = path.name
    return not (name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES))


@dataclass
class LandingWatcher:
    folder: Path
    state_path: Path | None = None
    _last: dict[str, Signature] = field(default_factory=dict)
    _reported: dict[str, Signature] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state_path is not None and self.state_path.exists():
            raw = json.loads(self.state_path.read_text())
            self._reported = {k: (int(v[0]), int(v[1])) for k, v in raw.items()}

    def _scan(self) -> dict[str, Signature]:
        seen: dict[str, Signature] = {}
        if not self.folder.is_dir():
            return seen
        for p in self.folder.iterdir():
            if not p.is_file() or p.is_symlink() or not is_candidate(p):
                continue
            try:
                st = p.stat()
            except FileNotFoundError:  # renamed or removed between listing and stat
                continue
            seen[p.name] = (st.st_size, st.st_mtime_ns)
        return seen

    def poll(self) -> list[Path]:
        """Files complete since the last poll, oldest modification first."""
        now = self._scan()
        ready = [name for name, sig in now.items()
                 if sig[0] > 0 and self._last.get(name) == sig and self._reported.get(name) != sig]
        self._last = now
        ready.sort(key=lambda n: (now[n][1], n))
        for name in ready:
            self._reported[name] = now[name]
        if ready:
            self._save()
        return [self.folder / n for n in ready]

    def forget(self, names: set[str]) -> None:
        """Report these files again at their next complete poll (the rescan found them
        with neither a ledger nor a quarantine row: an arrival whose report was lost)."""
        for name in names:
            self._reported.pop(name, None)

    def unreported(self) -> list[str]:
        """Non-empty files never reported with their present (size, mtime): what no
        serve has seen yet (`greenloop wake` starts one for them)."""
        return sorted(name for name, sig in self._scan().items()
                      if sig[0] > 0 and self._reported.get(name) != sig)

    def candidates(self) -> list[Path]:
        return [self.folder / n for n in sorted(self._scan())]

    def _save(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: list(v) for k, v in self._reported.items()}))
        tmp.replace(self.state_path)
