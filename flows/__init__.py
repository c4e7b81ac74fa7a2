"""Prefect flows: the order of steps and nothing else."""
