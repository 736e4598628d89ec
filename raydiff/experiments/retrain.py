"""Second stage of data parameters: retrain on the samples the first stage trusts.

Takes ``per_sample.parquet`` of the matching ``data_params`` trial, drops the top
``1 - subset_frac`` of its training samples by score (sigma*: most likely mislabelled),
over the whole training set (``drop_level: global``) or within each observed class
(``class``), and trains a fresh model on the rest with the same noisy labels. The test
split (clean labels) is the first stage's, so ``test_accuracy`` compares directly with
the first stage's baseline and data-parameter trials.
"""

from dataclasses import dataclass

import numpy as np
import torch

from raydiff.data import clean_positions
from raydiff.data.splits import config_tensors
from raydiff.engine import accuracy, predict
from raydiff.engine.supervised import fit
from raydiff.experiments.common import TrainConfig, load_split
from raydiff.experiments.config import at_least, choice, ratio

NAME = "retrain"
CONSUMES = ("data_params",)


@dataclass
class Config(TrainConfig):
    subset_frac: float = ratio(0.6)
    drop_level: str = choice("global", ["global", "class"])
    epochs: int = at_least(120, 1)


def keep_mask(score, observed, *, subset_frac, level):
    """Boolean (N,) mask of the samples kept: all but the ``N - int(N * subset_frac)``
    highest scores overall, or within each observed class for ``level="class"``."""
    keep = np.ones(len(score), dtype=bool)
    groups = [np.arange(len(score))] if level == "global" else [
        np.flatnonzero(observed == c) for c in np.unique(observed)]
    for members in groups:
        n_drop = len(members) - int(len(members) * subset_frac)
        keep[members[np.argsort(-score[members], kind="stable")[:n_drop]]] = False
    return keep


def run(config, report, data):
    device = report.device
    upstream = report.upstream("data_params")
    table = upstream.table("per_sample.parquet")
    test_ids, _ = load_split(upstream)
    tensors = config_tensors(config, device, data)     # the first stage's hard images, if any
    position = np.searchsorted(tensors.sample_id, table["sample_id"].to_numpy())
    test_pos = np.searchsorted(tensors.sample_id, test_ids)
    if (position >= len(tensors)).any() or not np.array_equal(
            tensors.sample_id[position.clip(max=len(tensors) - 1)], table["sample_id"]):
        raise ValueError("the data_params stage used a different subset of the data "
                         "(dataset/subset_size/subset_seed differ); align them in the sweep")
    clean_positions(tensors, test_pos)                 # its test split: clean, as there
    observed = table["observed_label"].to_numpy()
    noisy = table["is_noisy"].to_numpy(dtype=bool)
    keep = keep_mask(table["score"].to_numpy(), observed, subset_frac=config.subset_frac,
                     level=config.drop_level)
    train_pos = position[keep]
    report.trains_on(table["sample_id"].to_numpy()[keep], observed[keep], noisy[keep])
    x = tensors.x[torch.as_tensor(train_pos, device=device)]
    y = torch.as_tensor(observed[keep], device=device)
    test_x = tensors.x[torch.as_tensor(test_pos, device=device)]
    test_y = torch.as_tensor(tensors.label[test_pos], device=device)
    model = fit(config, report, x, y, num_classes=tensors.num_classes,
                eval_sets={"test": (test_x, test_y)}).model
    test_logits = predict(model, test_x, batch_size=config.eval_batch_size)
    metrics = {"test_accuracy": 100 * accuracy(test_logits, test_y),
               "n_train": int(keep.sum()),
               "kept_noise_fraction": float(noisy[keep].mean()),
               "dropped_noise_recall": float((~keep)[noisy].mean()) if noisy.any() else float("nan")}
    report(metrics)
    return metrics
