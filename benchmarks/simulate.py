"""Replay a stream through the pipeline's pure steps only: a fast way to choose thresholds
and recipes before measuring them with `greenloop compare`.

The same per-batch function as the served and replayed pipeline (`greenloop.step.step`,
driven by `greenloop.simulate`), without the edges (no Prefect, MLflow, DVC or
CodeCarbon). The pipeline is deterministic, so the quality printed here is the quality
`greenloop compare` then measures for the same config (tests/integration/
test_step_equivalence.py checks it); the CPU-seconds are training only and say nothing
about energy. Not an energy measurement.

    .venv/bin/python benchmarks/simulate.py --config configs/bikes.yaml \
        --set policy.retrain_quality_drop=1.0 --set train.finetune.epochs=6 --set model.seed=1
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from greenloop.config import GreenloopConfig, load_config
from greenloop.simulate import load_stream, simulate
from greenloop.workspace import Workspace


def with_overrides(cfg: GreenloopConfig, pairs: list[str]) -> GreenloopConfig:
    """`section.key=value` or `section.recipe.key=value`; values are JSON (1.0, "gated")."""
    raw = cfg.model_dump()
    for pair in pairs:
        path, _, text = pair.partition("=")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare word, e.g. policy.name=periodic
        *parents, leaf = path.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[leaf] = value
    return GreenloopConfig.model_validate(raw)


def simulate_config(cfg: GreenloopConfig, from_batch: int = 0) -> dict[str, Any]:
    batches, schema = load_stream(cfg, Workspace.from_env(None).source(cfg.data.path))
    return simulate(cfg, batches, schema).summary(from_batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--from-batch", type=int, default=0, metavar="K",
                    help="score and count training CPU from batch K on (as compare does)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the pipeline (tasks/runtime.py)
    cfg = with_overrides(load_config(args.config), args.set)
    wall0 = time.perf_counter()
    result = simulate_config(cfg, args.from_batch)
    result.update(config=args.config, overrides=args.set, from_batch=args.from_batch,
                  metric_of=cfg.data.task, wall_seconds=round(time.perf_counter() - wall0, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
