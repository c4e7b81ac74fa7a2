"""Training loops: a full retrain from scratch and a warm-start fine-tune.

Both use the same minibatch loop with index batching (a DataLoader's per-sample
collate costs more than the tiny MLP itself on two cores).
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from greenloop.config import ModelConfig, RecipeConfig
from greenloop.data import Schema, label_mask
from greenloop.evaluate import labelled
from greenloop.model import TabularModel


def fit(model: TabularModel, frame: pd.DataFrame, target: str, recipe: RecipeConfig,
        seed: int) -> float:
    """Train in place on the labelled rows; returns the last epoch's mean loss.

    Rows without a label are left out. With no labelled row at all the model is left
    unchanged and the loss is NaN: whether to train is the caller's decision.
    """
    frame = labelled(frame, target)
    if len(frame) == 0:
        return float("nan")
    x = model.pre.features(frame)
    y = model.pre.targets(frame[target])
    classify = model.pre.task == "classification"
    loss_fn: nn.Module = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    opt = torch.optim.Adam(model.net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    model.net.train()
    last = float("nan")
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            opt.zero_grad()
            out = model.net(x[idx])
            loss = loss_fn(out if model.pre.task == "classification" else out.squeeze(1), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        last = total / max(len(x), 1)
    model.net.eval()
    return last


def retrain(frame: pd.DataFrame, schema: Schema, task: str, model_cfg: ModelConfig,
            recipe: RecipeConfig, seed: int) -> TabularModel:
    """A new model from scratch: preprocessing refitted on this window (its scaling on
    every row, its classes and target scale on the labelled ones)."""
    if not label_mask(frame, schema.target).any():
        raise ValueError(f"cannot train a new model: no row of the {len(frame)} has a label "
                         f"in {schema.target!r}")
    model = TabularModel.create(frame, schema, task, model_cfg, seed)
    fit(model, frame, schema.target, recipe, seed)
    return model


def finetune(champion: TabularModel, frame: pd.DataFrame, target: str, recipe: RecipeConfig,
             seed: int) -> TabularModel:
    """A warm-started copy of the champion; the champion itself is never modified."""
    candidate = champion.copy()
    candidate.grow_classes(frame[target])
    fit(candidate, frame, target, recipe, seed)
    return candidate
