"""Roll the champion back: the ledger moves first (compare-and-swap, under the model's
update lock, so no update is promoting at the same time), then the MLflow alias, and
the reason is kept in both: in the ledger's alias history and as model-version tags."""

from __future__ import annotations

import time
from dataclasses import dataclass

from greenloop.ledger import Ledger
from greenloop.locks import model_lock
from tasks.runtime import Runtime

ROLLBACK = "rollback"


class RollbackError(ValueError):
    """A rollback that cannot be done; the message says why."""


@dataclass(frozen=True)
class RolledBack:
    model: str
    version: int
    previous: int
    reason: str


def default_target(ledger: Ledger, model: str) -> int:
    """The champion before the current one, skipping versions a rollback already
    demoted (so rolling back twice goes further back instead of toggling)."""
    history = ledger.alias_history(model)
    if not history:
        raise RollbackError(f"{model} has no champion yet: nothing to roll back")
    current = history[-1]["version"]
    demoted = {h["previous"] for h in history if (h["reason"] or "").startswith(ROLLBACK)}
    for h in reversed(history[:-1]):
        if h["version"] != current and h["version"] not in demoted:
            return int(h["version"])
    raise RollbackError(f"{model}: no earlier champion in the alias history to roll back to")


def rollback(rt: Runtime, to: int | None = None, reason: str | None = None) -> RolledBack:
    model = rt.model_name
    with model_lock(rt.ws.state, model, "update"):
        current = rt.ledger.champion(model)
        if current is None:
            raise RollbackError(f"{model} has no champion yet: nothing to roll back")
        target = default_target(rt.ledger, model) if to is None else to
        if target == current:
            raise RollbackError(f"version {target} is already the champion of {model}")
        if rt.ledger.version(model, target) is None:
            raise RollbackError(f"{model} has no version {target} in the ledger")
        rt.model(target)  # must load (from the cache or MLflow) before it serves
        why = f"{ROLLBACK} from v{current} to v{target}: {reason or 'manual rollback'}"
        if not rt.ledger.move_champion(model, target, current, why):
            raise RollbackError(f"the champion of {model} moved meanwhile; try again")
        rt.tracker.set_champion(model, target)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        rt.tracker.tag_version(model, target, "rollback_reason", why)
        rt.tracker.tag_version(model, target, "rollback_at", stamp)
        rt.tracker.tag_version(model, current, "rolled_back", f"{stamp} {why}")
    return RolledBack(model, target, current, why)
