"""The face of greenloop: the `greenloop` command line and the server launchers.

Kept out of the core package `greenloop/`, which imports neither this package nor
`flows`/`tasks` (tests/unit/test_layering.py checks it). Commands import Prefect,
MLflow and torch lazily, so `greenloop --help` answers at once.
"""
