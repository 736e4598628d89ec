"""Training loops over device-resident tensors that record per-sample dynamics."""

from raydiff.engine.train import Dynamics, TrainResult, accuracy, predict, train

__all__ = ["Dynamics", "TrainResult", "accuracy", "predict", "train"]
