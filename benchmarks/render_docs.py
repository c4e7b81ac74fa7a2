"""Copy the figures of finished `greenloop compare` runs into docs/benchmarks/ and print
their tables as Markdown (pasted into docs/benchmarks.md with the commands that made them).

    .venv/bin/python benchmarks/render_docs.py HOME [HOME ...]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"


def main() -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    for home in map(Path, sys.argv[1:]):
        for folder in sorted((home / "reports").glob("compare-*")):
            if not (folder / "compare.json").is_file():
                continue
            data = json.loads((folder / "compare.json").read_text())
            name = data["dataset"]
            for fig in ("compare.png", "frontier.png"):
                shutil.copyfile(folder / fig, DOCS / f"{name}-{fig}")
            shutil.copyfile(folder / "compare.json", DOCS / f"{name}-compare.json")
            print(f"<!-- {folder} -->")
            print((folder / "compare.md").read_text())
            print(f"![{name}: quality and cumulative energy per batch]"
                  f"(benchmarks/{name}-compare.png)")
            print(f"![{name}: energy vs quality](benchmarks/{name}-frontier.png)\n")


if __name__ == "__main__":
    main()
