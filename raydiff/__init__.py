"""raydiff: hard-sample research as Ray Tune sweeps, tracked in MLflow."""

__version__ = "0.1.0"
