"""What versioning one accepted batch costs as a stream grows: `tasks.versioning.dvc_add`
of a new Parquet-sized file into a batch folder that already holds N batches (each a
`.parquet` and its `.dvc` file, as `serve` leaves them), in a throwaway DVC repository.

A served model's batch folder grows by two files a batch, for as long as the service
runs; a cost per add that grows with the folder is paid again on every later batch.

    .venv/bin/python benchmarks/dvc_add_cost.py [--sizes 100,1000,4000] [--adds 40]

Prints, per folder size, the median wall and CPU milliseconds of `--adds` adds (CPU:
`time.process_time`, this process only; DVC runs no subprocess here).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tasks.versioning import dvc_add, ensure_repo


def _fill(folder: Path, start: int, stop: int) -> None:
    """Batches already tracked, as files only: what the folder holds, not their cost."""
    for i in range(start, stop):
        (folder / f"old{i:06d}.parquet").write_bytes(b"x")
        (folder / f"old{i:06d}.parquet.dvc").write_bytes(b"x")


def _adds(home: Path, folder: Path, first: int, n: int) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for i in range(first, first + n):
        path = folder / f"new{i:06d}.parquet"
        path.write_bytes(os.urandom(12_000))  # a 300 x 8 batch's Parquet is ~12 kB
        w0, c0 = time.perf_counter(), time.process_time()
        dvc_add(home, path)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return walls, cpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,4000", help="batches already in the folder")
    ap.add_argument("--adds", type=int, default=40, help="timed adds per size")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="greenloop-dvc-add-"))
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # DVC's "Initialized ..." line
            ensure_repo(home)
        folder = home / "data" / "accepted" / "stream"
        folder.mkdir(parents=True)
        warm = 100  # imports, the repository, its databases: ~80 adds run slower (measured)
        _adds(home, folder, 0, warm)
        held, results, first = 0, {}, warm
        for size in sorted(int(s) for s in args.sizes.split(",")):
            _fill(folder, held, size)
            held = size
            walls, cpus = _adds(home, folder, first, args.adds)
            first += args.adds
            results[size] = {"wall_ms_median": round(1000 * statistics.median(walls), 2),
                             "cpu_ms_median": round(1000 * statistics.median(cpus), 2)}
        print(json.dumps({"batches_in_folder": results, "adds_per_size": args.adds,
                          "nproc": os.cpu_count(),
                          "load_average_1min": os.getloadavg()[0]}, indent=1))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
