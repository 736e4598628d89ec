"""Variance of Gradients: how much a sample's input gradient moves over training.

A classifier (any of the project's models) trains on the training split. At K
checkpoints, every ``vog_every`` epochs or at the explicit ``vog_epochs`` (0 = before
training), the input gradient of every sample is taken in eval mode: of the pre-softmax
logit of the (observed) training label for training samples, of the label the model
predicts at that checkpoint for test samples, one backward pass per minibatch
(:mod:`raydiff.engine.input_grad`). Only running moments are kept
(:class:`raydiff.scores.vog.VoGAccumulator`, 4 x N x pixels values of ``vog_dtype``),
never the K gradient maps.

VoG per stage (early / middle / late thirds of the checkpoints, complete), raw,
class-normalised and absolute class-normalised, normalised within each split by the
label (the observed label for training samples, the true one for test samples). The
original normalised the test set by its true labels too.

Artifacts: ``per_sample.parquet`` (train and test rows; ``vog_<stage>``,
``vog_<stage>_norm``, ``vog_<stage>_abs``, ``predicted`` by the final model, a ``score_<name>`` column for every
registered score of the ``gradients`` input; ``score`` = ``vog_complete_norm``), ``decile_error.parquet`` and ``decile_error.png`` (test error per VoG
decile of each stage), ``vog_grid_class<c>.png`` (per class the training images with the
lowest and highest VoG at ``figures.grid_stage``, the final model's prediction above each),
``vog.json`` (the checkpoint epochs and stages). A failed trial restarts from scratch:
the running moments are not checkpointed.
"""

import time
import typing
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from raydiff.data import BATCH_STREAM, derived_seed
from raydiff.data.splits import noisy_splits
from raydiff.engine import accuracy, crop_flip, predict, train
from raydiff.engine.input_grad import input_gradients
from raydiff.engine.supervised import make_model, schedule, train_options
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.common import TrainConfig, class_name
from raydiff.experiments.config import ConfigError, Figures, at_least, choice, figures, ratio
from raydiff.plots.vog import decile_figure, grid_figure
from raydiff.scores import compute_all
from raydiff.scores.vog import (NORMALIZATIONS, STAGES, VoGAccumulator, column, decile_error,
                                stage_checkpoints, vog_table)

NAME = "vog"


@dataclass
class VoGFigures(Figures):
    grid_stage: str = choice("late", list(STAGES))       # the VoG the grids rank by
    grid_classes: int = at_least(10, 0)                   # grids of the first n classes
    grid_size: int = at_least(5, 1)                       # n x n lowest and highest images


@dataclass
class Config(TrainConfig):
    epochs: int = at_least(30, 1)
    lr_milestones: list[int] = field(default_factory=list)
    vog_every: int = at_least(3, 1)                       # a checkpoint every n epochs,
    vog_epochs: typing.Optional[list[int]] = None         # unless these are given (0 = start)
    test_fraction: float = ratio(0.2)                     # when the dataset has no test part
    vog_dtype: str = choice("float32", ["float32", "float64"])   # of the running moments
    decile_variant: str = choice("norm", list(NORMALIZATIONS))
    figures: VoGFigures = figures(VoGFigures)

    val_fraction: typing.ClassVar[float] = 0.0
    # not keys of vog: a failed trial restarts from scratch (the running moments are not
    # checkpointed), so a sweep setting checkpoint_every is refused, not silently ignored
    checkpoint_every: typing.ClassVar[int] = 0
    SMOKE = {"epochs": 6, "vog_every": 1, "vog_epochs": None,
             "figures": {"grid_classes": 2, "grid_size": 3}}

    def check(self, where):
        epochs = self.checkpoint_epochs()
        bad = [e for e in epochs if not 0 <= e <= self.last_epoch]
        if bad:
            raise ConfigError(f"{where}: vog_epochs {bad} are outside 0..{self.last_epoch} "
                              f"(the epochs trained)")
        if len(epochs) < 6:
            raise ConfigError(f"{where}: VoG needs at least 6 checkpoints (2 per stage), "
                              f"this config gives {len(epochs)} ({epochs}); lower vog_every, "
                              f"add vog_epochs or raise epochs")

    def checkpoint_epochs(self):
        """The epochs (sorted, unique; 0 = before training) whose model is a checkpoint."""
        if self.vog_epochs is not None:
            return sorted(set(int(e) for e in self.vog_epochs))
        return list(range(self.vog_every, self.last_epoch + 1, self.vog_every))


def _maps(grad):
    """(b, C, H, W) or (b, D) gradient tensor -> (b, P) float32 numpy, channels averaged."""
    if grad.ndim == 4:
        grad = grad.mean(dim=1)
    return grad.flatten(1).float().cpu().numpy()


def accumulate(model, t, parts, accumulators, *, batch_size):
    """Add checkpoint ``t`` of every split: ``parts`` {split: (x, labels or None)}."""
    for split, (x, labels) in parts.items():
        for rows, grad, _ in input_gradients(model, x, labels, batch_size=batch_size):
            accumulators[split].add(t, _maps(grad), rows)


def run(config, report, data):
    device = report.device
    tensors, train_pos, _, test_pos = noisy_splits(config, data, device)
    tr, te = tensors.take(train_pos), tensors.take(test_pos)
    if len(te) < 10:
        raise ConfigError(f"the test split has {len(te)} samples; the decile analysis needs "
                          f">= 10: raise test_fraction or subset_size")
    epochs = config.checkpoint_epochs()
    parts = {"train": (tr.x, tr.y), "test": (te.x, None)}
    model, accumulators, vog_seconds = _train_accumulating(
        config, report, tensors.num_classes, parts, te.label, epochs)

    predicted = {split: predict(model, x, batch_size=config.eval_batch_size).argmax(1).cpu().numpy()
                 for split, (x, _) in parts.items()}
    labels = {"train": tr.observed_label, "test": te.label}
    columns = {split: vog_table(accumulators[split].scores(), labels[split]) for split in labels}
    # every registered score of the `gradients` input, from the accumulated moments
    registered = {split: compute_all("gradients", accumulators[split], labels[split])
                  for split in labels}
    accumulators.clear()       # the N x pixels moments are large: free them now
    table = pd.concat([per_sample_table(
        sample_id=part.sample_id, label=part.label, observed_label=part.observed_label,
        **part.ground_truth(), split=split, hard=None,
        score=columns[split]["vog_complete_norm"], predicted=predicted[split],
        **columns[split], **{f"score_{k}": v for k, v in registered[split].items()})
        for split, part in (("train", tr), ("test", te))], ignore_index=True)
    report.table("per_sample.parquet", table)
    stages = stage_checkpoints(len(epochs))
    report.json("vog.json", {"checkpoint_epochs": epochs,
                             "stages": {s: [epochs[i] for i in idx] for s, idx in stages.items()}})

    wrong = predicted["test"] != te.label
    deciles = decile_frame(columns["test"], wrong, config.decile_variant)
    report.table("decile_error.parquet", deciles)
    _figures(config, report, data, tr, columns["train"], predicted["train"], deciles,
             tensors.num_classes)

    metrics = {"test_accuracy": 100 * float((~wrong).mean()) if len(wrong) else float("nan"),
               "train_accuracy": 100 * float((predicted["train"] == tr.observed_label).mean()),
               "n_checkpoints": len(epochs), "vog_seconds": vog_seconds,
               "n_train": len(tr), "n_test": len(te)}
    for stage in STAGES:
        rows = deciles[deciles["stage"] == stage]["error"].to_numpy()
        metrics[f"test_error_top_decile_{stage}"] = float(rows[-1])
        metrics[f"test_error_bottom_decile_{stage}"] = float(rows[0])
    report(metrics)
    return metrics


def _train_accumulating(config, report, num_classes, parts, test_label, epochs):
    """Train the trial's model, accumulating the input gradients of ``parts`` ({split:
    (x, y or None)}) at each of the checkpoint ``epochs`` (0: before training) and
    logging the loss and test accuracy per epoch. Returns (model, {split:
    VoGAccumulator}, seconds spent on the gradients)."""
    device = report.device
    (train_x, train_y), (test_x, _) = parts["train"], parts["test"]
    test_y = torch.as_tensor(test_label, device=device)
    slot = {e: t for t, e in enumerate(epochs)}
    pixels = _maps(train_x[:1]).shape[1]
    accumulators = {split: VoGAccumulator(len(x), pixels, len(epochs),
                                          dtype=np.dtype(config.vog_dtype))
                    for split, (x, _) in parts.items()}
    model = make_model(config, train_x.shape[1:], num_classes).to(device)
    generator = torch.Generator().manual_seed(derived_seed(config.seed, BATCH_STREAM))
    vog_seconds = 0.0

    def take(epoch):
        nonlocal vog_seconds
        if epoch in slot:
            start = time.perf_counter()
            accumulate(model, slot[epoch], parts, accumulators,
                       batch_size=config.eval_batch_size)
            vog_seconds += time.perf_counter() - start

    def on_epoch(epoch, loss):
        take(epoch)
        logits = predict(model, test_x, batch_size=config.eval_batch_size)
        report({"loss": loss, "test_accuracy": 100 * accuracy(logits, test_y)}, step=epoch)
        return False

    take(0)
    train(model, train_x, train_y, epochs=config.last_epoch, **train_options(config, model),
          batch_size=config.batch_size, generator=generator,
          on_epoch=on_epoch, augment=crop_flip if config.augment else None,
          lr_schedule=schedule(config))
    return model, accumulators, vog_seconds


def _figures(config, report, data, tr, train_columns, train_predicted, deciles, num_classes):
    """The test error per VoG decile, and per class a grid of the training images from
    lowest to highest VoG (image data, ``figures.grid_classes`` > 0)."""
    fig = config.figures
    if not fig.enabled:
        return
    report.figure("decile_error.png", decile_figure(
        deciles, title=f"{config.dataset} {config.model}: test error per VoG decile"))
    if not (data.is_image and fig.grid_classes):
        return
    images = np.asarray(data.x)[tr.sample_id]
    raw = train_columns[f"vog_{fig.grid_stage}"]
    for c in range(min(fig.grid_classes, num_classes)):
        members = np.flatnonzero(tr.observed_label == c)
        if len(members):
            report.figure(f"vog_grid_class{c:03d}.png", grid_figure(
                images[members], raw[members], train_predicted[members],
                n=fig.grid_size, title=f"{class_name(data, c)}, {fig.grid_stage} VoG"))


def decile_frame(columns, wrong, variant):
    """Tidy test error per decile of every stage's ``variant`` VoG (stage, variant,
    decile 1..10, percentile 5..95, error in percent, count)."""
    rows = []
    for stage in STAGES:
        percentile, error, count = decile_error(columns[column(stage, variant)], wrong)
        rows.append(pd.DataFrame({"stage": stage, "variant": variant,
                                  "decile": np.arange(1, 11), "percentile": percentile,
                                  "error": error, "count": count}))
    return pd.concat(rows, ignore_index=True)

