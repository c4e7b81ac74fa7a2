"""Typed, validated configuration: one YAML file describes one dataset stream.

Every model is frozen and forbids unknown keys, so a typo in a config is an error
that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from greenloop.calibrate import FINETUNE_SE


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    path: Path = Field(description="CSV or Parquet source, relative to the project home")
    target: str
    task: Literal["classification", "regression"]
    drop: list[str] = Field(default_factory=list, description="columns never used as features")
    categorical: list[str] = Field(default_factory=list)
    batch_rows: int | None = Field(default=None, gt=0)
    time_column: str | None = None
    period: str | None = Field(default=None, description="pandas offset alias, e.g. '7D'")
    bootstrap_batches: int = Field(default=4, ge=1)
    unknown_columns: Literal["reject", "drop"] = "reject"
    max_batch_rows: int = Field(default=200_000, gt=0)

    @model_validator(mode="after")
    def _one_batching_rule(self) -> DataConfig:
        by_rows = self.batch_rows is not None
        by_time = self.time_column is not None and self.period is not None
        if by_rows == by_time:
            raise ValueError("set either data.batch_rows or both data.time_column and data.period")
        if self.target in self.drop:
            raise ValueError(f"data.target {self.target!r} is also listed in data.drop")
        return self


class ModelConfig(_Strict):
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int = 0

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if not v or any(w <= 0 for w in v):
            raise ValueError("model.hidden must be a non-empty list of positive layer widths")
        return v


class RecipeConfig(_Strict):
    """How to train: shared by every policy, so policies differ only in when and on what."""

    epochs: int = Field(gt=0)
    batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    # Early stopping: hold out `validation_fraction` of the training rows and stop when
    # their loss has not improved for `patience` epochs (best weights kept); `epochs` is
    # then the cap. None = a fixed `epochs`, as an explicit recipe always meant.
    patience: int | None = Field(default=None, gt=0)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    # Regression loss on the standardised target; l1 optimises the MAE that is reported.
    loss: Literal["mse", "l1", "huber"] = "mse"


class TrainConfig(_Strict):
    # The defaults stop on a holdout of the training rows (issue 11): up to 30 / 10 epochs.
    retrain: RecipeConfig = RecipeConfig(epochs=30, patience=3, loss="l1")
    finetune: RecipeConfig = RecipeConfig(epochs=10, patience=2, loss="l1")
    # "auto": with calibrated thresholds, a full retrain races all history against the
    # last 8 batches and keeps the clearly better on the recent holdouts (greenloop/
    # window.py); with fixed thresholds it is all history. Not the default: on the suite
    # it gained up to 2 points on concept changes and lost 9% of friedman-drift's MAE
    # (docs/suite.md, run 10).
    retrain_window_batches: int | Literal["auto"] | None = Field(
        default=None, description="full retrain on the last N batches; null = all history; "
                                  "auto = race the two"
    )
    # "champion": a full retrain starts from the champion's weights and preprocessing (the
    # retrain recipe, its rows and early stopping unchanged) instead of a new model. It
    # stops sooner, so it trains fewer rows, but it keeps the first model's scaling and
    # starting point: opt-in, for every policy alike (docs/suite.md, runs 7 and 13).
    refit_start: Literal["scratch", "champion"] = Field(
        default="scratch", description="full retrain from a new model or from the champion"
    )
    replay_batches: int = Field(default=8, ge=0, description="fine-tune replays rows from these")
    replay_ratio: float = Field(default=1.0, ge=0, description="replayed rows per new row")
    holdout_fraction: float = Field(default=0.2, gt=0, lt=0.5)

    @field_validator("retrain_window_batches")
    @classmethod
    def _positive_window(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, int) and v <= 0:
            raise ValueError("must be a positive number of batches, null or 'auto'")
        return v


class DriftConfig(_Strict):
    # Evidently switches its default test at 1,000 rows; fix it here instead.
    method: str = "wasserstein"
    categorical_method: str = "psi"
    threshold: float = Field(default=0.1, gt=0)
    reference_batches: int = Field(default=8, gt=0)
    # The full Evidently HTML report costs 0.5-1.9 s a batch here, more than most retrains
    # (measured: on weather, rendering it on every retrain doubled the pipeline's
    # energy). So by default it is rendered only when someone asks: `greenloop report
    # --seq N` draws any checked batch's report against the reference it was judged by.
    report: Literal["on_retrain", "on_action", "always", "never"] = "never"


# The fixed defaults before calibration (issue 11), for configs that set some of them.
FIXED_THRESHOLDS = {"finetune_drift_share": 0.5, "retrain_drift_share": 0.5,
                    "finetune_quality_drop": 0.02, "retrain_quality_drop": 0.10}
FIXED_TOLERANCES = {"promote_tolerance": 0.0, "forgetting_tolerance": 0.05}


class PolicyConfig(_Strict):
    name: Literal["gated", "periodic", "drift-retrain", "finetune", "never", "cost-aware"] = "gated"
    # Thresholds: None (the default) = calibrated on the stream itself (greenloop/
    # calibrate.py): a drop in standard errors of the batch metric, drift beyond the
    # reference batches' own variation. A number is used as given, as before.
    finetune_drift_share: float | None = Field(default=None, ge=0, le=1)
    retrain_drift_share: float | None = Field(default=None, ge=0, le=1)
    finetune_quality_drop: float | None = Field(default=None)
    retrain_quality_drop: float | None = Field(default=None)
    # With `finetune_quality_drop` left to calibrate: a fine-tune once the champion's drop
    # on the batch reaches this many standard errors of the batch metric.
    finetune_drop_se: float = Field(default=FINETUNE_SE, ge=0)
    periodic_every: int = Field(default=1, gt=0)
    # What a scheduled pipeline retrains on: all history (null) or the last N batches.
    periodic_window_batches: int | None = Field(default=None, gt=0)
    points_per_kwh: float = Field(default=1000.0, gt=0, description="cost-aware trade-off")
    # None (the default) = a paired test on the holdout rows: refused only when the
    # candidate is significantly worse there. A number: the fixed tolerance, as before.
    promote_tolerance: float | None = Field(default=None, ge=0)
    forgetting_tolerance: float | None = Field(default=None, ge=0)
    # Registered model <dataset>-<namespace> instead of <dataset>-<policy>: `compare` runs
    # every policy and baseline variant in its own fresh namespace (cmp-<policy>), so it
    # never touches the production model and two periodic variants never share a champion.
    namespace: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")

    @model_validator(mode="before")
    @classmethod
    def _set_in_part_means_fixed(cls, data: object) -> object:
        # A config that sets some thresholds (or one tolerance) was written against the
        # fixed rules: the others it left out keep the fixed defaults they had then.
        if isinstance(data, dict):
            for group in (FIXED_THRESHOLDS, FIXED_TOLERANCES):
                if any(data.get(k) is not None for k in group):
                    data = {**data, **{k: v for k, v in group.items() if data.get(k) is None}}
        return data


class EnergyConfig(_Strict):
    country_iso_code: str = Field(default="USA", min_length=3, max_length=3)
    region: str | None = None


class TrackingConfig(_Strict):
    tracking_uri: str | None = Field(
        default=None, description="default sqlite:///<home>/mlflow.db; env MLFLOW_TRACKING_URI wins"
    )
    # A name, never a path: the artifact folder is mlartifacts/<experiment>.
    experiment: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

    @field_validator("tracking_uri")
    @classmethod
    def _no_secrets_in_uri(cls, v: str | None) -> str | None:
        if v and "@" in v.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("no credentials in tracking_uri: use MLFLOW_TRACKING_USERNAME/"
                             "MLFLOW_TRACKING_PASSWORD from the environment")
        return v


class ScheduleConfig(_Strict):
    update_cron: str = "0 * * * *"
    full_retrain_cron: str = "0 3 * * 0"
    full_retrain_active: bool = False
    carbon_window_hours: list[int] = Field(default_factory=list, description="UTC hours")
    urgent_drift_share: float = Field(default=0.9, ge=0, le=1)


class GreenloopConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    drift: DriftConfig = DriftConfig()
    policy: PolicyConfig = PolicyConfig()
    energy: EnergyConfig = EnergyConfig()
    tracking: TrackingConfig = TrackingConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    def with_policy(self, policy: str) -> GreenloopConfig:
        # Validated (model_copy alone would not be): the name becomes part of paths.
        chosen = PolicyConfig.model_validate({**self.policy.model_dump(), "name": policy})
        return self.model_copy(update={"policy": chosen})


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def load_config(path: str | os.PathLike[str]) -> GreenloopConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return GreenloopConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: invalid config\n{_format_errors(e)}") from e
