"""Each model version as an MLflow pyfunc model, written by hand from what is known.

`mlflow.pyfunc.log_model` costs seconds per version (environment inference, a serving
check that reloads the model). Everything it would work out is known here: the code
that loads the model (this module), the pinned requirements, the input columns. So
the `MLmodel` file, the environment files and the input example are written straight
into the version's folder beside `state_dict.pt` + `model.json`, and the folder is
logged as plain artifacts.

The model is stored "from code" (`python_model.py`, which names `GreenloopPyfunc`):
MLflow 3 refuses to unpickle a cloudpickled model by default, and a saved model here
is data (weights loaded with `weights_only=True`), never pickled code. The code it
names is greenloop's own, so `greenloop` must be installed where the model is loaded
or served (`mlflow models serve --env-manager local` from the project's venv).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import Model, ModelSignature, infer_signature  # noqa: E402
from mlflow.models.utils import _save_example  # noqa: E402
from mlflow.pyfunc import PythonModel, PythonModelContext  # noqa: E402

from greenloop.model import TabularModel  # noqa: E402
from tasks.tracking import CHAMPION  # noqa: E402

CODE_FILE = "python_model.py"
WEIGHTS = "state_dict.pt"
PREPROCESSING = "model.json"
EXAMPLE_ROWS = 5
# The distributions the loader imports, pinned to what is installed (no inference at
# log time: reading a few installed versions costs microseconds, once per process).
REQUIREMENTS = ("mlflow", "torch", "pandas", "numpy", "pydantic", "pyyaml")

_CODE = '''"""Loads a greenloop model version (written by tasks.mlmodel)."""
import mlflow

from tasks.mlmodel import GreenloopPyfunc

mlflow.models.set_model(GreenloopPyfunc())
'''


class GreenloopPyfunc(PythonModel):
    """A `TabularModel` behind MLflow's pyfunc interface: one prediction per row."""

    def load_context(self, context: PythonModelContext) -> None:
        self.model = TabularModel.load(Path(context.artifacts["weights"]).parent)

    def predict(self, context: PythonModelContext | None, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.Series:
        return pd.Series(self.model.predict(model_input), name="prediction")


def input_columns(model: TabularModel) -> list[str]:
    return [*model.pre.numeric, *model.pre.categorical]


def example_rows(model: TabularModel, frame: pd.DataFrame) -> pd.DataFrame:
    """A few input rows with the types the training data had."""
    return frame[input_columns(model)].head(EXAMPLE_ROWS).reset_index(drop=True)


def signature(model: TabularModel, rows: pd.DataFrame) -> ModelSignature:
    """Inferred from a few rows as the data has them: MLflow refuses unsafe casts
    (int64 to double, int to string), so declaring other types than the stream's own
    would make every caller convert first."""
    with warnings.catch_warnings():  # MLflow's hint on integer columns and missing
        warnings.simplefilter("ignore", UserWarning)  # values: `score` converts those
        return infer_signature(rows, pd.Series(model.predict(rows), name="prediction"))


_PINNED: list[str] = []


def pip_requirements() -> list[str]:
    if not _PINNED:
        for name in REQUIREMENTS:
            version = metadata.version(name).split("+")[0]  # drop a local tag like +cpu
            _PINNED.append(f"{name}=={version}")
    return list(_PINNED)


def write_mlmodel(folder: Path, model: TabularModel, frame: pd.DataFrame) -> None:
    """Turn a saved `TabularModel` folder into an MLflow pyfunc model, in place."""
    missing = [f for f in (WEIGHTS, PREPROCESSING) if not (folder / f).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a saved model: missing {', '.join(missing)}")
    absent = [c for c in input_columns(model) if c not in frame.columns]
    if absent:
        raise ValueError(f"the example frame lacks the model's input columns: {absent}")
    (folder / CODE_FILE).write_text(_CODE)
    requirements = pip_requirements()
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    python = ".".join(map(str, sys.version_info[:3]))
    (folder / "python_env.yaml").write_text(yaml.safe_dump(
        {"python": python, "build_dependencies": ["pip"],
         "dependencies": ["-r requirements.txt"]}, sort_keys=False))
    (folder / "conda.yaml").write_text(yaml.safe_dump(
        {"name": "mlflow-env", "channels": ["conda-forge"],
         "dependencies": [f"python={python}", "pip", {"pip": requirements}]}, sort_keys=False))
    rows = example_rows(model, frame)
    mlmodel = Model(signature=signature(model, rows))
    _save_example(mlmodel, rows, str(folder))
    artifacts = {"weights": {"path": WEIGHTS, "uri": WEIGHTS},
                 "preprocessing": {"path": PREPROCESSING, "uri": PREPROCESSING}}
    mlflow.pyfunc.add_to_model(mlmodel, loader_module="mlflow.pyfunc.loaders.code_model",
                               conda_env="conda.yaml", python_env="python_env.yaml",
                               model_code_path=CODE_FILE, artifacts=artifacts, streamable=False)
    mlmodel.save(str(folder / "MLmodel"))


class ScoringError(ValueError):
    """A model or input that cannot be scored; the message says which and why."""


def load_version(tracking_uri: str, model_name: str,
                 version: int | None = None) -> mlflow.pyfunc.PyFuncModel:
    """The champion (or `version`) through MLflow's own pyfunc loader, the one that
    `mlflow models serve` uses; `tracking_uri` is also the registry. The version's
    files are fetched with the URI passed explicitly: `mlflow.set_tracking_uri` would
    also set MLFLOW_TRACKING_URI for the whole process (and every later Runtime)."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION) if version is None \
            else client.get_model_version(model_name, str(version))
    except MlflowException as e:
        what = f"no version {version}" if version is not None else \
            "no champion yet (run `greenloop run` first?)"
        raise ScoringError(f"model {model_name!r} in {tracking_uri} has {what}") from e
    with tempfile.TemporaryDirectory(prefix="greenloop-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=tmp,
                                                    tracking_uri=tracking_uri)
        return mlflow.pyfunc.load_model(local)  # load_context reads every file it needs


def score(loaded: mlflow.pyfunc.PyFuncModel, frame: pd.DataFrame) -> pd.Series:
    """One prediction per row. Missing input columns are named; columns whose values
    fit the signature's type exactly (integers read where a float is declared, say) are
    converted first, since MLflow refuses even safe-looking casts like int64 to double."""
    schema = loaded.metadata.get_input_schema()
    if schema is None:
        raise ScoringError("the model carries no input signature")
    names = schema.input_names()
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ScoringError(f"input lacks the model's column(s): {', '.join(missing)}")
    rows = frame[names].copy()
    for spec in schema.inputs:
        rows[spec.name] = _conform(rows[spec.name], str(spec.type))
    try:
        out = loaded.predict(rows)
    except MlflowException as e:
        raise ScoringError(str(e).splitlines()[0]) from e
    return pd.Series(np.asarray(out), index=frame.index, name="prediction")


def _conform(values: pd.Series, declared: str) -> pd.Series:
    kind = values.dtype.kind
    if declared in ("DataType.double", "DataType.float") and kind in "iub":
        return values.astype(float)
    if declared in ("DataType.long", "DataType.integer") and kind == "f":
        finite = values.dropna()
        if len(finite) == len(values) and (finite == finite.round()).all():
            return values.astype("int64")
    if declared == "DataType.string" and kind != "O":
        return values.astype(str).where(values.notna(), None)
    return values
