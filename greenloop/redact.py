"""Credentials out of anything printed or stored: `scheme://user:pass@host` -> `scheme://***@host`.

A tracking URI may carry a user and password (MLFLOW_TRACKING_URI=https://u:p@host); it
reaches summaries, CLI output and error messages (MLflow and requests quote the URL they
failed on). Every place that prints or stores such text passes it through `redact`.
"""

from __future__ import annotations

import re

# The userinfo part of an authority: after `scheme://`, up to the last `@` before the
# path (greedy, so a raw `@` inside the password is covered too); `[^/\s]` keeps the
# match inside one URL's authority.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]+@")


def redact(text: str) -> str:
    """`text` with the user and password of every URL in it replaced by `***`."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


__all__ = ["redact"]
