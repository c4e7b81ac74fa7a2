"""Edges of a replay: cut the source into arrival files, and summarize from the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from greenloop.data import write_stream
from greenloop.redact import redact
from greenloop.summary import build_summary
from tasks.runtime import Runtime


def prepare_stream(rt: Runtime) -> list[Path]:
    return write_stream(rt.source, rt.cfg.data, rt.ws.stream(rt.cfg.name))


def summarize(rt: Runtime) -> dict[str, Any]:
    mlflow = {"tracking_uri": redact(rt.tracking_uri), "experiment": rt.experiment,
              "registered_model": rt.model_name,
              "champion_version": rt.ledger.champion(rt.model_name)}
    return build_summary(rt.ledger, model=rt.model_name, dataset=rt.cfg.name,
                         policy=rt.policy_name, task=rt.cfg.data.task,
                         energy_method=rt.meter.method(), mlflow=mlflow)
