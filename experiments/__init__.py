"""Experiments: search spaces (TOML data), tuning (Optuna) and tracking (MLflow).

Everything that knows about Optuna or MLflow lives here; models never import them.
"""
