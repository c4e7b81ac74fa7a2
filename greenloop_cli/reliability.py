"""`greenloop rollback`: move the champion back, and say why (issue 5); `greenloop retry`:
put dead-lettered batches back (issue 13).

Registered on the main Typer app by `greenloop_cli/main.py` importing this module.
"""

from __future__ import annotations

from typing import Annotated

import typer

from greenloop_cli.main import ConfigOpt, HomeOpt, PolicyOpt, _check_config, _env, _fail, app


@app.command()
def rollback(config: ConfigOpt, policy: PolicyOpt = None, home: HomeOpt = None,
             to: Annotated[int | None, typer.Option(
                 "--to", help="version to make champion (default: the previous champion)")] = None,
             reason: Annotated[str | None, typer.Option(
                 "--reason", help="why; kept in the ledger and as an MLflow tag")] = None) -> None:
    """Move the `champion` alias back (ledger first, then MLflow), recording why."""
    _env()
    _check_config(config)
    from tasks.rollback import RollbackError
    from tasks.rollback import rollback as do_rollback
    from tasks.runtime import get_runtime

    rt = get_runtime(str(config), policy, str(home) if home else None)
    try:
        done = do_rollback(rt, to, reason)
    except RollbackError as e:
        _fail(str(e))
        return
    typer.echo(f"{done.model}: champion v{done.previous} -> v{done.version} ({done.reason})")


@app.command()
def retry(config: ConfigOpt, policy: PolicyOpt = None, home: HomeOpt = None,
          seq: Annotated[int | None, typer.Option(
              "--seq", help="the failed batch to put back (default: every failed batch)")] = None
          ) -> None:
    """Put failed (dead-lettered) batches back to `accepted`, with fresh attempts: the next
    update (`greenloop ingest`, a served run) processes them in arrival order."""
    _env()
    _check_config(config)
    from greenloop.config import load_config
    from greenloop.ledger import Ledger
    from greenloop.workspace import Workspace

    cfg = load_config(config)
    if policy:
        cfg = cfg.with_policy(policy)
    model = f"{cfg.name}-{cfg.policy.namespace or cfg.policy.name}"
    ws = Workspace.from_env(str(home) if home else None)
    if not ws.ledger_path.exists():
        _fail(f"no ledger at {ws.ledger_path}: nothing has run here yet")
    back = Ledger(ws.ledger_path).retry_failed(model, seq)
    if not back:
        _fail(f"{model}: no failed batch" + (f" with seq {seq}" if seq is not None else ""))
    typer.echo(f"{model}: batch(es) {', '.join(map(str, back))} back to accepted; the next "
               f"update processes them")
