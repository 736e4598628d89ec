"""One fold of k-fold cross-validation: out-of-fold predicted probabilities.

The (noisy) subset is split into ``folds`` parts, stratified by the observed label and
seeded by ``seed``, so every fold trial of one setting sees the same split. Trial ``fold``
trains on the other parts and predicts class probabilities for its own part, which it
never saw: the input confident learning needs. A ``confident_learning`` stage gathers
the ``folds`` trials of a setting (``after: crossval``) into one out-of-fold matrix.

The probabilities come from the epoch with the best held-out accuracy on the *observed*
(noisy) labels (``oof_epoch: best``, the first such epoch), as cleanlab's own
cross-validation recipe loads each fold's best checkpoint: a fold model trained to the end
memorises its noisy labels, and its confident, over-fit predictions on the held-out part
hide the very label errors confident learning looks for. ``oof_epoch: final`` takes the
last epoch instead (the earlier behaviour). Only the held-out labels the trial may see
(the noisy ones) choose the epoch, never the true ones.

Artifacts: ``oof.parquet`` (sample_id, label, observed_label, is_noisy, fold and one
column ``p_<c>`` per class) and ``crossval.json`` (fold, folds, the epoch predicted from
as ``oof_epoch``, seconds spent); metric ``oof_epoch`` too.
"""

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from raydiff.data import prepare
from raydiff.data.splits import fold_assignment
from raydiff.engine.supervised import fit
from raydiff.experiments.common import TrainConfig
from raydiff.experiments.config import ConfigError, at_least, choice

NAME = "crossval"


@dataclass
class Config(TrainConfig):
    folds: int = at_least(5, 2)
    fold: int = at_least(0, 0)
    oof_epoch: str = choice("best", ["best", "final"])   # best held-out (noisy) accuracy

    def check(self, where):
        if self.fold >= self.folds:
            raise ConfigError(f"{where}: fold={self.fold} must be < folds={self.folds} "
                              f"(folds are numbered 0..folds-1)")


def run(config, report, data):
    started = time.monotonic()
    tensors = prepare(data, subset_size=config.subset_size, subset_seed=config.subset_seed,
                      noise_ratio=config.noise_ratio, noise_kind=config.noise_kind,
                      noise_seed=config.seed, normalize=config.normalize, device=report.device)
    observed = tensors.observed_label
    fold = fold_assignment(observed, folds=config.folds, seed=config.seed)
    tr = tensors.take(np.flatnonzero(fold != config.fold))
    held = tensors.take(np.flatnonzero(fold == config.fold))
    # held.y holds the observed labels: all a fold may know about its held-out part
    fitted = fit(config, report, tr.x, tr.y, num_classes=tensors.num_classes,
                 eval_sets={"heldout": (held.x, held.y)}, best_of="heldout",
                 record_eval_logits=["heldout"])
    best = fitted.best_epoch
    logits = fitted.trajectories["heldout_logits"]                               # (M, E, C)
    epoch = best if config.oof_epoch == "best" and best else logits.shape[1]
    probs = torch.softmax(torch.from_numpy(logits[:, epoch - 1]).double(), dim=1).numpy()
    table = pd.DataFrame({"sample_id": held.sample_id, "label": held.label,
                          "observed_label": held.observed_label, "is_noisy": held.is_noisy,
                          "fold": config.fold})
    for c in range(tensors.num_classes):
        table[f"p_{c}"] = probs[:, c]
    report.table("oof.parquet", table)
    seconds = time.monotonic() - started
    report.json("crossval.json", {"fold": config.fold, "folds": config.folds,
                                  "oof_epoch": epoch, "seconds": seconds})
    metrics = {"n_train": len(tr), "n_heldout": len(held), "oof_epoch": epoch,
               "epochs_run": logits.shape[1],
               "heldout_true_accuracy": 100 * float((probs.argmax(1) == held.label).mean())}
    report(metrics)
    return metrics
