"""Prefect flows: each a short story of task calls."""
