"""greenloop: drift-gated, energy-metered continual learning.

This package is the pure core: data, drift, policy, model, training, evaluation,
energy metering and the ledger. It never imports Prefect or MLflow, so every piece
can be tested without a server; orchestration lives in `flows/`, tracking in `tasks/`.
"""

__version__ = "0.1.0"
