"""`greenloop rollback`: move the champion back, and say why (issue 5).

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
