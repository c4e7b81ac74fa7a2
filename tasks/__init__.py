"""Prefect tasks: thin edges around the core — files, DVC, MLflow, reports."""
