"""Training loops over device-resident tensors that record per-sample dynamics."""

from raydiff.engine.train import (Dynamics, TrainResult, accuracy, crop_flip, predict,
                                  step_schedule, train)

__all__ = ["Dynamics", "TrainResult", "accuracy", "crop_flip", "predict", "step_schedule",
           "train"]
