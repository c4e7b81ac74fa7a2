"""A PyTorch MLP for tabular data, with the preprocessing it was trained with.

Scaling and categorical encoding are fitted on the training window and saved beside
the weights as JSON, and the weights as a `state_dict` loaded with
`weights_only=True`: a saved model is data, never unpickled code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from greenloop.columnar import float_columns
from greenloop.config import ModelConfig
from greenloop.data import Schema

MAX_CATEGORIES = 50  # rarer levels share the all-zeros "unseen" code
MISSING_LEVEL = "<missing>"  # a missing categorical value is a level of its own


# A standard deviation this small relative to the mean is rounding, not variation: the
# column was constant in the fitting window. Elec2's `transfer` is 0.414912 for its first
# ~50 weeks and its float64 std there is ~1e-16, not 0; dividing by it scaled later inputs
# to 1e15, and every warm-started model after the column began to vary degraded until it
# predicted worse than chance (chained fine-tunes fell to 0.44 accuracy; a retrain: 0.77).
CONSTANT_RELATIVE_STD = 1e-9


def _scale(stds: object, means: object) -> np.ndarray:
    """The divisor of each column (or of a target): its std, or 1 where it is constant or
    empty (NaN fails the comparison), so a constant column's inputs are its offsets from
    the fitted mean."""
    stds, means = np.asarray(stds, dtype=float), np.asarray(means, dtype=float)
    varies = np.abs(stds) > CONSTANT_RELATIVE_STD * np.maximum(1.0, np.abs(means))
    return np.where(varies, stds, 1.0)


@dataclass
class Preprocessor:
    numeric: list[str]
    categorical: list[str]
    medians: list[float]
    means: list[float]
    stds: list[float]
    vocab: dict[str, list[str]]
    task: str
    classes: list[str] = field(default_factory=list)
    y_mean: float = 0.0
    y_std: float = 1.0

    @classmethod
    def fit(cls, frame: pd.DataFrame, schema: Schema, task: str) -> Preprocessor:
        # Scaling and vocabularies use every row (unlabelled rows are real inputs too);
        # classes and the target scale only the labelled ones. A column with no value
        # at all gets mean 0 and std 1, so its imputed inputs are exactly 0.
        num = frame[list(schema.numeric)].astype(float)
        medians = num.median().fillna(0.0)  # kept for the saved format; imputation uses means
        means = num.mean().fillna(0.0)
        stds = _scale(num.std(ddof=0), means)
        vocab = {c: _top_levels(frame[c]) for c in schema.categorical}
        y = frame[schema.target].dropna()
        pre = cls(list(schema.numeric), list(schema.categorical), medians.tolist(),
                  means.tolist(), stds.tolist(), vocab, task)
        if task == "classification":
            pre.classes = sorted(y.astype(str).unique().tolist())
        else:
            pre.y_mean = float(y.mean())
            pre.y_std = float(_scale(y.std(ddof=0), pre.y_mean))
        return pre

    @property
    def n_inputs(self) -> int:
        return len(self.numeric) + sum(len(v) for v in self.vocab.values())

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    def features(self, frame: pd.DataFrame) -> torch.Tensor:
        """Network inputs: missing numbers imputed with the fitted mean (input 0), missing
        categories as their own level; a non-finite input is an error, never fed on."""
        num = float_columns(frame, self.numeric, np.float32)
        means = np.asarray(self.means, dtype=np.float32)
        num = np.where(np.isnan(num), means, num)
        num = (num - means) / np.asarray(self.stds, dtype=np.float32)
        blocks = [num]
        for col in self.categorical:
            values = _category_text(frame[col])
            levels = np.asarray(self.vocab[col])
            blocks.append((values[:, None] == levels[None, :]).astype(np.float32))
        x = np.concatenate(blocks, axis=1)
        if not np.isfinite(x).all():
            bad = [c for c, ok in zip(self.numeric, np.isfinite(num).all(axis=0), strict=True)
                   if not ok]
            raise ValueError(f"non-finite model input in column(s) {bad}: values beyond "
                             "float32 range must be rejected before the model")
        return torch.from_numpy(x)

    def targets(self, y: pd.Series) -> torch.Tensor:
        if self.task == "classification":
            index = {c: i for i, c in enumerate(self.classes)}
            return torch.tensor([index[v] for v in y.astype(str)], dtype=torch.long)
        return torch.tensor(((y.to_numpy(float) - self.y_mean) / self.y_std), dtype=torch.float32)

    def add_classes(self, labels: pd.Series) -> list[str]:
        new = sorted(set(labels.dropna().astype(str)) - set(self.classes))
        self.classes.extend(new)  # appended, so existing output rows keep their meaning
        return new


def _category_text(s: pd.Series) -> np.ndarray:
    return s.astype(object).where(s.notna(), MISSING_LEVEL).astype(str).to_numpy()


def _top_levels(s: pd.Series) -> list[str]:
    counts = pd.Series(_category_text(s)).value_counts()
    return sorted(counts.index[:MAX_CATEGORIES].tolist())


def build_net(n_inputs: int, n_outputs: int, cfg: ModelConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_inputs
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        width = hidden
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


@dataclass
class TabularModel:
    pre: Preprocessor
    net: nn.Sequential
    cfg: ModelConfig
    # Rows trained on × epochs run by the training that made this model (not its
    # ancestors'): what that training cost, counted with the epochs early stopping
    # really ran, so it is deterministic where CPU-seconds are not. 0 = not trained here.
    row_epochs: int = 0

    @classmethod
    def create(cls, frame: pd.DataFrame, schema: Schema, task: str, cfg: ModelConfig,
               seed: int) -> TabularModel:
        pre = Preprocessor.fit(frame, schema, task)
        torch.manual_seed(seed)
        return cls(pre, build_net(pre.n_inputs, pre.n_outputs, cfg), cfg)

    def copy(self) -> TabularModel:
        pre = Preprocessor(**json.loads(json.dumps(asdict(self.pre))))
        net = build_net(pre.n_inputs, pre.n_outputs, self.cfg)
        net.load_state_dict(self.net.state_dict())
        return TabularModel(pre, net, self.cfg)

    def grow_classes(self, labels: pd.Series) -> list[str]:
        """Add output units for classes seen for the first time (warm start keeps the rest)."""
        new = self.pre.add_classes(labels) if self.pre.task == "classification" else []
        if new:
            old: nn.Linear = self.net[-1]
            grown = nn.Linear(old.in_features, old.out_features + len(new))
            with torch.no_grad():
                grown.weight[: old.out_features] = old.weight
                grown.bias[: old.out_features] = old.bias
            self.net[-1] = grown
        return new

    @torch.no_grad()
    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        self.net.eval()
        out = self.net(self.pre.features(frame))
        if self.pre.task == "classification":
            return np.asarray(self.pre.classes, dtype=object)[out.argmax(dim=1).numpy()]
        return out.squeeze(1).numpy() * self.pre.y_std + self.pre.y_mean

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), folder / "state_dict.pt")
        meta = {"preprocessor": asdict(self.pre), "model": self.cfg.model_dump()}
        (folder / "model.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: Path) -> TabularModel:
        meta = json.loads((folder / "model.json").read_text())
        pre = Preprocessor(**meta["preprocessor"])
        cfg = ModelConfig(**meta["model"])
        net = build_net(pre.n_inputs, pre.n_outputs, cfg)
        state = torch.load(folder / "state_dict.pt", weights_only=True, map_location="cpu")
        net.load_state_dict(state)
        return cls(pre, net, cfg)
