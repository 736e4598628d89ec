"""The VoG toy study: on 2-d blobs, VoG is high close to the decision boundary.

``make_blobs`` (``n_samples`` points, 3 centres, ``cluster_std``, drawn with ``seed``):
blob 0 is class 0, blobs 1 and 2 class 1; the first ``n_samples - n_test`` points train,
the last ``n_test`` test. The linear 2-``hidden``-2 network (:mod:`raydiff.models.toy`)
trains full-batch with SGD (``lr``, ``epochs`` steps); after every step the input
gradient of every sample is taken (training samples: their label; test samples: the
label predicted at that step), so K = ``epochs`` checkpoints. With a linear network the
gradient of a *logit* does not depend on the input at all, so by default the toy
differentiates the softmax *probability* of the label (``output: probability``), as the
original toy script did; ``output: logit`` is the image experiments' definition. The
original also took the test gradients at the true labels.

The perpendicular distance of each point to the boundary learnt by the final model comes
from its weights. Metrics: ``spearman`` (VoG of the configured ``split``, ``vog_stage`` and
``normalization`` against that distance; negative = high VoG near the boundary) and
``spearman_<split>_<stage>_<normalization>`` for every combination. Artifacts:
``per_sample.parquet`` (coordinates ``x0``, ``x1``, ``distance``, ``predicted`` and all
VoG columns; ``score`` = class-normalised complete VoG), ``boundary.json``, figures
``boundary.png`` (decision regions with the points) and ``vog_vs_distance.png``.
The data is generated here, so of the common keys only ``seed`` has an effect.

With the original's lr 0.001 and 15 steps the network moves little from its N(0, 1)
start, so every checkpoint's boundary is close to the final one and the raw VoG ranks
points by their distance to it almost perfectly; with a larger ``lr`` the boundary moves
during training and the correlation with the final boundary's distance weakens.
"""

import typing
from dataclasses import dataclass, field

import numpy as np
import torch
from raydiff.data import INIT_STREAM, derived_seed, make_blobs_dataset
from raydiff.engine import predict, train
from raydiff.engine.input_grad import OUTPUTS, input_gradients
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.config import Common, ConfigError, at_least, choice
from raydiff.plots.vog import boundary_figure, distance_figure
from raydiff.scores.vog import column, vog_table
from raydiff.models import get_model
from raydiff.scores.vog import NORMALIZATIONS, STAGES, VoGAccumulator, spearman

NAME = "vog_toy"
NEEDS_DATA = False
SPLITS = ("train", "test")


@dataclass
class Config(Common):
    dataset: str = choice("blobs", ["blobs"])
    n_samples: int = at_least(500, 20)
    cluster_std: float = 2.0
    n_test: int = at_least(50, 10)
    hidden: list[int] = field(default_factory=lambda: [10])
    init_std: float = 1.0
    lr: float = 0.001
    epochs: int = at_least(15, 6)          # full-batch steps = checkpoints
    output: str = choice("probability", list(OUTPUTS))
    split: str = choice("train", list(SPLITS))
    vog_stage: str = choice("complete", list(STAGES))   # not "stage": a sweep's stage name
    normalization: str = choice("norm", list(NORMALIZATIONS))

    SMOKE: typing.ClassVar[dict] = {}
    # keys of Common the toy never reads (it makes its own blobs, with clean labels): not
    # keys of this experiment, so a sweep setting them is refused rather than ignored
    noise_ratio: typing.ClassVar[float] = 0.0
    subset_size: typing.ClassVar[typing.Optional[int]] = None
    data_root: typing.ClassVar[typing.Optional[str]] = None

    def check(self, where):
        if self.n_test > self.n_samples - 10:
            raise ConfigError(f"{where}: n_test={self.n_test} leaves fewer than 10 of "
                              f"n_samples={self.n_samples} to train on")


def distances(x, w, c):
    """Perpendicular distance of rows of ``x`` (N, 2) to the line ``x @ w + c = 0``."""
    return np.abs(np.asarray(x, dtype=np.float64) @ w + c) / np.linalg.norm(w)


def run(config, report, data=None):
    device = report.device
    blobs = make_blobs_dataset(n_samples=config.n_samples, cluster_std=config.cluster_std,
                               seed=config.seed)
    x = torch.as_tensor(blobs.x, device=device)
    y = torch.as_tensor(blobs.y, device=device)
    n_train = config.n_samples - config.n_test
    split_of = np.array(["train"] * n_train + ["test"] * config.n_test)
    parts = {"train": (x[:n_train], y[:n_train]), "test": (x[n_train:], None)}
    accumulators = {s: VoGAccumulator(len(p[0]), x.shape[1], config.epochs)
                    for s, p in parts.items()}
    model = get_model("toy_linear", input_shape=(x.shape[1],), num_classes=2,
                      hidden=config.hidden, init_std=config.init_std,
                      seed=derived_seed(config.seed, INIT_STREAM)).to(device)

    def on_epoch(epoch, loss):
        for split, (xs, labels) in parts.items():
            for rows, grad, _ in input_gradients(model, xs, labels, output=config.output):
                accumulators[split].add(epoch - 1, grad.double().cpu().numpy(), rows)
        report({"loss": loss}, step=epoch)
        return False

    train(model, parts["train"][0], parts["train"][1], epochs=config.epochs, lr=config.lr,
          on_epoch=on_epoch)

    predicted = predict(model, x).argmax(1).cpu().numpy()
    w, c = model.boundary()
    distance = distances(blobs.x, w, c)
    labels = {"train": blobs.y[:n_train], "test": blobs.y[n_train:]}
    columns = {s: vog_table(accumulators[s].scores(), labels[s]) for s in SPLITS}
    merged = {k: np.concatenate([columns["train"][k], columns["test"][k]])
              for k in columns["train"]}
    table = per_sample_table(
        sample_id=np.arange(config.n_samples), label=blobs.y, observed_label=blobs.y,
        is_noisy=np.zeros(config.n_samples, dtype=bool), is_hard=np.zeros(config.n_samples, dtype=bool),
        hardness=config.hardness,
        split=split_of, hard=None,
        score=merged["vog_complete_norm"], x0=blobs.x[:, 0], x1=blobs.x[:, 1],
        distance=distance, predicted=predicted, **merged)
    report.table("per_sample.parquet", table)
    report.json("boundary.json", {"w": w, "c": c})

    metrics = {}
    for split in SPLITS:
        at = split_of == split
        metrics[f"{split}_accuracy"] = 100 * float((predicted[at] == blobs.y[at]).mean())
        for stage in STAGES:
            for norm in NORMALIZATIONS:
                metrics[f"spearman_{split}_{stage}_{norm}"] = spearman(
                    merged[column(stage, norm)][at], distance[at])
    chosen = column(config.vog_stage, config.normalization)
    metrics["spearman"] = metrics[f"spearman_{config.split}_{config.vog_stage}_{config.normalization}"]
    part = table[table["split"] == config.split]
    report.figure("boundary.png", boundary_figure(part, w, c, title=f"{config.split} points"))
    report.figure("vog_vs_distance.png", distance_figure(
        part, chosen, title=f"{config.split}, {config.vog_stage}, {config.normalization}: "
                            f"Spearman {metrics['spearman']:.2f}"))
    report(metrics)
    return metrics

