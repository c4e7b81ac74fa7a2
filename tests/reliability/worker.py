"""A child process for the concurrency tests: `update` (ingest + process) each path.

    python -m tests.reliability.worker CONFIG HOME PATH...
"""

from __future__ import annotations

import sys


def main(config: str, home: str, paths: list[str]) -> None:
    from flows import call_flow
    from flows.update import update

    for path in paths:
        call_flow(update, config, path=path, home=home)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
