"""Training loops: a full retrain from scratch and a warm-start fine-tune.

Both use the same minibatch loop with index batching (a DataLoader's per-sample
collate costs more than the tiny MLP itself on two cores).
"""

from __future__ import annotations

import copy
import os

import pandas as pd
import torch
from torch import nn

from greenloop.config import ModelConfig, RecipeConfig
from greenloop.data import Schema, label_mask
from greenloop.evaluate import labelled
from greenloop.model import TabularModel


def limit_torch_threads() -> None:
    """One intra-op thread for torch (env GREENLOOP_TORCH_THREADS to change). The MLPs
    here are far too small to gain from a second thread, and on a busy 2-core machine
    torch's spinning worker threads cost 10-40x the CPU time of the training itself
    (measured: a 19k-row, 3-epoch retrain took 24 CPU-s with 2 threads, 0.6 with 1; a
    21k-row, 10-epoch one 98 vs 3.4 CPU-s). Every entry point that trains calls it."""
    torch.set_num_threads(int(os.environ.get("GREENLOOP_TORCH_THREADS", "1")))


def fit(model: TabularModel, frame: pd.DataFrame, target: str, recipe: RecipeConfig,
        seed: int) -> float:
    """Train in place on the labelled rows; returns the last epoch's mean loss and sets
    `model.row_epochs` to the rows trained on × the epochs run.

    Rows without a label are left out. With no labelled row at all the model is left
    unchanged and the loss is NaN: whether to train is the caller's decision.
    """
    frame = labelled(frame, target)
    if len(frame) == 0:
        return float("nan")
    x = model.pre.features(frame)
    y = model.pre.targets(frame[target])
    classify = model.pre.task == "classification"
    loss_fn = _loss_fn(classify, recipe)
    opt = torch.optim.Adam(model.net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    x, y, stopper = _early_stopping(model, x, y, loss_fn, recipe, gen)
    model.net.train()
    last = float("nan")
    epochs_run = 0
    for _ in range(recipe.epochs):
        epochs_run += 1
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
        if stopper is not None and stopper.should_stop():
            break
    if stopper is not None:
        stopper.restore_best()
    model.net.eval()
    model.row_epochs = len(x) * epochs_run
    return last


def _loss_fn(classify: bool, recipe: RecipeConfig) -> nn.Module:
    if classify:
        return nn.CrossEntropyLoss()
    return {"mse": nn.MSELoss, "l1": nn.L1Loss, "huber": nn.HuberLoss}[recipe.loss]()


# Fewer validation rows than this and the holdout rule decides on noise: fixed epochs.
MIN_VALIDATION_ROWS = 20


class _EarlyStopper:
    """Stops when the validation loss has not improved for `patience` epochs and puts
    back the weights of the best epoch."""

    def __init__(self, model: TabularModel, x_val: torch.Tensor, y_val: torch.Tensor,
                 loss_fn: nn.Module, patience: int) -> None:
        self.model, self.x_val, self.y_val = model, x_val, y_val
        self.loss_fn, self.patience = loss_fn, patience
        self.best = self._val_loss()
        self.best_state = copy.deepcopy(model.net.state_dict())
        self.since_best = 0

    @torch.no_grad()
    def _val_loss(self) -> float:
        self.model.net.eval()
        out = self.model.net(self.x_val)
        out = out if self.model.pre.task == "classification" else out.squeeze(1)
        value = float(self.loss_fn(out, self.y_val))
        self.model.net.train()
        return value

    def should_stop(self) -> bool:
        value = self._val_loss()
        if value < self.best:
            self.best, self.since_best = value, 0
            self.best_state = copy.deepcopy(self.model.net.state_dict())
        else:
            self.since_best += 1
        return self.since_best >= self.patience

    def restore_best(self) -> None:
        self.model.net.load_state_dict(self.best_state)


def _early_stopping(model: TabularModel, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module,
                    recipe: RecipeConfig, gen: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor, _EarlyStopper | None]:
    """With `recipe.patience`, a seeded slice of the rows becomes the validation set (not
    trained on); returns the rows left to train on and the stopper."""
    n_val = int(len(x) * recipe.validation_fraction)
    if recipe.patience is None or n_val < MIN_VALIDATION_ROWS:
        return x, y, None
    order = torch.randperm(len(x), generator=gen)
    val, keep = order[:n_val], order[n_val:]
    return x[keep], y[keep], _EarlyStopper(model, x[val], y[val], loss_fn, recipe.patience)


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
