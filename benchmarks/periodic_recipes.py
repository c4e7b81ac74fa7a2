"""Which full-retrain recipe serves `periodic` best? (issue 3: the strongest baseline)

Replays a dataset's stream with the pipeline's own pure steps (same batches, same holdout
split, same training rows, same model) and, for every k-th batch, trains a model from
scratch on all history before it and scores it on that batch (test-then-train): an
unbiased sample of periodic's per-batch prequential quality, at 1/k of the cost.
No Prefect, no MLflow: this chooses a recipe, it is not an energy measurement.

    .venv/bin/python benchmarks/periodic_recipes.py --config configs/elec2.yaml \
        --every 4 --recipe 5:64:0.001 --recipe 10:64:0.001 --recipe 20:64:0.001
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import time

import torch

from greenloop.config import RecipeConfig, load_config
from greenloop.data import infer_schema, read_table, split_stream, validate_batch
from greenloop.evaluate import evaluate
from greenloop.steps import make_batch, training_rows
from greenloop.train import retrain
from greenloop.workspace import Workspace


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--every", type=int, default=4, help="score every k-th batch")
    ap.add_argument("--recipe", action="append", required=True, help="epochs:batch_size:lr")
    ap.add_argument("--window", type=int, default=None, help="retrain window (batches)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    source = read_table(Workspace.from_env().source(cfg.data.path))
    schema = infer_schema(source, cfg.data)
    batches = []
    for seq, part in enumerate(split_stream(source, cfg.data), start=1):
        digest = hashlib.sha256(part.to_csv(index=False).encode()).hexdigest()
        frame = validate_batch(part, schema, cfg.data)
        batches.append(make_batch(seq, digest, frame, cfg.train.holdout_fraction))
    train_cfg = cfg.train.model_copy(update={"retrain_window_batches": args.window})
    cfg = cfg.model_copy(update={"train": train_cfg})
    start = cfg.data.bootstrap_batches
    results = []
    for spec in args.recipe:
        epochs, bs, lr = spec.split(":")
        recipe = RecipeConfig(epochs=int(epochs), batch_size=int(bs), lr=float(lr))
        correct = rows = 0.0
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        for i in range(start, len(batches), args.every):
            new, history = batches[i - 1], batches[: i - 1]
            train = training_rows("retrain", new, history, cfg, cfg.model.seed + new.seq)
            seed = cfg.model.seed + new.seq
            model = retrain(train, schema, cfg.data.task, cfg.model, recipe, seed)
            q = evaluate(model, batches[i].frame, schema.target)
            correct += q * len(batches[i].frame)
            rows += len(batches[i].frame)
        out = {"recipe": recipe.model_dump(), "window": args.window, "every": args.every,
               "prequential": correct / rows, "scored_rows": rows,
               "cpu_seconds": cpu_seconds() - cpu0, "wall_seconds": time.perf_counter() - wall0}
        results.append(out)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
