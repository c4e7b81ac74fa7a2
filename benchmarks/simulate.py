"""Replay a stream through the pipeline's pure steps only: a fast way to choose thresholds
and recipes before measuring them with `greenloop compare`.

The same core functions as `flows/update.py` (batch split, drift test, policy, training
rows, training, promotion check) in the same order, without the edges (no Prefect,
MLflow, DVC or CodeCarbon). The pipeline is deterministic, so the quality printed here is
the quality `greenloop compare` then measures for the same config; the CPU-seconds are
training only and say nothing about energy. Not an energy measurement.

    .venv/bin/python benchmarks/simulate.py --config configs/bikes.yaml \
        --set policy.retrain_quality_drop=1.0 --set train.finetune.epochs=6 --set model.seed=1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import time
from typing import Any

import torch

from greenloop.config import GreenloopConfig, load_config
from greenloop.data import infer_schema, read_table, split_stream, validate_batch
from greenloop.drift import detect
from greenloop.evaluate import evaluate, relative_drop
from greenloop.policy import Observation, make_policy
from greenloop.steps import Batch, concat, judge, make_batch, train_candidate, training_rows
from greenloop.workspace import Workspace


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


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


def stream(cfg: GreenloopConfig) -> tuple[list[Batch], Any]:
    source = read_table(Workspace.from_env(None).source(cfg.data.path))
    schema = infer_schema(source, cfg.data)
    batches = []
    for i, part in enumerate(split_stream(source, cfg.data)):
        frame = validate_batch(part, schema, cfg.data)
        digest = hashlib.sha256(part.to_csv(index=False).encode()).hexdigest()
        batches.append(make_batch(i + 1, digest, frame, cfg.train.holdout_fraction))
    return batches, schema


def simulate(cfg: GreenloopConfig) -> dict[str, Any]:
    batches, schema = stream(cfg)
    policy, n_boot, target = make_policy(cfg.policy), cfg.data.bootstrap_batches, cfg.data.target
    first = concat([b.train for b in batches[:n_boot]])
    champion = train_candidate("retrain", None, first, schema, cfg, cfg.model.seed + n_boot)
    verdict = judge(champion, None, batches[n_boot - 1].holdout,
                    concat([b.holdout for b in batches[:n_boot]]), cfg)
    reference_quality, through = verdict.eval_quality, n_boot
    decisions = {"skip": 0, "finetune": 0, "retrain": 0}
    weighted, rows, promoted, train_cpu = 0.0, 0, 0, 0.0
    for batch in batches[n_boot:]:
        history = [b for b in batches if b.seq < batch.seq]
        quality = evaluate(champion, batch.frame, target)  # test, then train
        weighted, rows = weighted + quality * len(batch.frame), rows + len(batch.frame)
        reference = [b for b in history if b.seq <= through][-cfg.drift.reference_batches:]
        drift = detect(concat([b.frame for b in reference]), batch.frame, schema, cfg.drift)
        obs = Observation(batch.seq - n_boot - 1, drift.share, drift.drifted,
                          relative_drop(cfg.data.task, reference_quality, quality))
        action = policy.decide(obs).action
        decisions[action] += 1
        if action == "skip":
            continue
        cpu0, seed = cpu_seconds(), cfg.model.seed + batch.seq
        candidate = train_candidate(action, champion,
                                    training_rows(action, batch, history, cfg, seed),
                                    schema, cfg, seed)
        train_cpu += cpu_seconds() - cpu0
        window = reference or history[-cfg.drift.reference_batches:]
        verdict = judge(candidate, champion, batch.holdout,
                        concat([b.holdout for b in window]), cfg)
        if verdict.promote:
            champion, reference_quality, through = candidate, verdict.eval_quality, batch.seq
            promoted += 1
    return {"prequential": weighted / rows, "decisions": decisions, "promoted": promoted,
            "train_cpu_seconds": round(train_cpu, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the pipeline (tasks/runtime.py)
    cfg = with_overrides(load_config(args.config), args.set)
    wall0 = time.perf_counter()
    result = simulate(cfg)
    result.update(config=args.config, overrides=args.set, metric_of=cfg.data.task,
                  wall_seconds=round(time.perf_counter() - wall0, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
