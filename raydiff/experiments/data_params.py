"""Data parameters: learn a temperature per class and/or per sample, find noisy labels.

The model trains on the noisy training split with class and/or instance data parameters
(``variant``; ``baseline`` trains without them), see :mod:`raydiff.engine.data_params`.
Every epoch it reports the loss, the accuracy on a held-out test split with clean labels
and, when noise was injected, how well the current score finds the noisy samples:
precision of the top noise-ratio fraction, AUROC and average precision. The score is
sigma* (the sample's temperature: class + instance parameters); without data parameters
it is the sample's cross-entropy in the training pass (the small-loss criterion), so the
baseline has a detector to compare with.

Artifacts: the instance sigma of every training sample after every epoch
(``instance_sigma.npy``, N x E float16; ``class_sigma.npy`` C x E), the per-sample
training loss (``train_loss.npy``), ``per_sample.parquet`` with ``score`` = sigma* at the
final epoch (or the best-validation epoch), ``split.json`` (the test and validation sample
ids, for the ``retrain`` stage), and per class the enrichment figures: easy / hard /
need-review image strips, a t-SNE of the sigma trajectories drawn as thumbnails, and a few
trajectories of each label.

The test split is the dataset's own test part when it has one (CIFAR), else a random
``test_fraction`` of the subset. The noise is drawn over the whole subset, as in every
experiment (the same seed flips the same ``sample_id``), and the test samples keep their
true labels, so about ``noise_ratio`` of the training pool is corrupted (exactly
``int(N * noise_ratio)`` of the whole subset).
"""

from dataclasses import dataclass

import numpy as np
import torch

from raydiff.data.splits import noisy_splits
from raydiff.engine import accuracy, predict
from raydiff.engine.data_params import DataParameters
from raydiff import plots
from raydiff.engine.supervised import fit, score_at
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.common import TrainConfig, class_name
from raydiff.experiments.config import ConfigError, Figures, at_least, choice, figures, ratio
from raydiff.plots.data_params import enrichment
from raydiff.scores.data_params import enrichment_labels
from raydiff.scores.metrics import detection, top_k_mask

NAME = "data_params"
VARIANTS = {"baseline": (False, False), "class": (True, False), "instance": (False, True),
            "both": (True, True)}


@dataclass
class DataParamsFigures(Figures):
    enrich_classes: int = at_least(10, 0)      # draw the enrichment figures of the first n classes
    strip_size: int = at_least(8, 1)
    tsne_perplexity: float = 50.0
    tsne_thumbnails: int = at_least(150, 0)
    trajectories_per_label: int = at_least(3, 0)


@dataclass
class Config(TrainConfig):
    variant: str = choice("instance", list(VARIANTS))
    init_class: float = 1.0
    init_instance: float = 1.0
    lr_class: float = 0.1
    lr_instance: float = 0.1
    wd_class: float = 0.0
    wd_instance: float = 0.0
    test_fraction: float = ratio(0.2)          # used when the dataset has no test part
    val_fraction: float = ratio(0.0)
    score_epoch: str = choice("final", ["final", "best_val"])
    # enrichment: thresholds on the instance sigma trajectory (the `category` column)
    n_easy: int = at_least(5, 0)
    hard_above: float = 2.0
    review_peak_above: float = 1.5
    review_final_at_most: float = 1.0
    figures: DataParamsFigures = figures(DataParamsFigures)

    SMOKE = {"figures": {"enrich_classes": 2, "tsne_thumbnails": 20}}

    def check(self, where):
        if self.score_epoch == "best_val" and self.val_fraction == 0:
            raise ConfigError(f"{where}: score_epoch=best_val needs a validation split; "
                              f"set val_fraction > 0")
        if min(self.init_class, self.init_instance) <= 0:
            raise ConfigError(f"{where}: init_class and init_instance must be > 0")


def run(config, report, data):
    device = report.device
    tensors, train_pos, val_pos, test_pos = noisy_splits(config, data, device)
    tr, va, te = (tensors.take(p) for p in (train_pos, val_pos, test_pos))
    test_y = torch.as_tensor(te.label, device=device)      # clean labels
    eval_sets = {"test": (te.x, test_y)}
    if len(va):
        eval_sets["val"] = (va.x, va.y)      # a real validation set has noisy labels too
    learn_class, learn_instance = VARIANTS[config.variant]
    dp = DataParameters(len(tr), tensors.num_classes, tr.y, learn_class=learn_class,
                        learn_instance=learn_instance, init_class=config.init_class,
                        init_instance=config.init_instance, lr_class=config.lr_class,
                        lr_instance=config.lr_instance, wd_class=config.wd_class,
                        wd_instance=config.wd_instance, momentum=config.momentum)
    fitted = fit(config, report, tr.x, tr.y, num_classes=tensors.num_classes,
                 eval_sets=eval_sets, data_params=dp, noisy=tr.is_noisy,
                 noise_ratio=config.noise_ratio)
    model, traj, best_epoch = fitted.model, fitted.trajectories, fitted.best_epoch
    epochs_run = traj["train_loss"].shape[1]
    epoch = best_epoch if config.score_epoch == "best_val" and best_epoch else epochs_run
    score = score_at(traj, tr.y, epoch)

    for key, arr in traj.items():
        report.array(f"{key}.npy", arr.astype(np.float16))
    report.json("split.json", {"test_sample_id": te.sample_id.tolist(),
                               "val_sample_id": va.sample_id.tolist(), "score_epoch": epoch})
    observed = tr.observed_label
    hard = top_k_mask(score, config.noise_ratio)
    extra = {"train_loss": traj["train_loss"][:, epoch - 1]}
    category = None
    if "instance_sigma" in traj:
        category = enrichment_labels(
            traj["instance_sigma"][:, :epoch], observed, n_easy=config.n_easy,
            hard_above=config.hard_above, review_peak_above=config.review_peak_above,
            review_final_at_most=config.review_final_at_most)
        extra["category"] = category
        extra["sigma_peak"] = traj["instance_sigma"][:, :epoch].max(axis=1)
    report.table("per_sample.parquet", per_sample_table(
        sample_id=tr.sample_id, label=tr.label, observed_label=observed,
        **tr.ground_truth(),
        split="train", hard=hard, score=score,
        **extra))
    _figures(config, report, data, tr, score, traj, epoch, category, tensors.num_classes)

    test_logits = predict(model, te.x, batch_size=config.eval_batch_size)
    metrics = {"test_accuracy": 100 * accuracy(test_logits, test_y),
               "epochs_run": epochs_run, "score_epoch": epoch, "n_train": len(tr),
               "n_test": len(te)}
    if tr.is_noisy.any() and not tr.is_noisy.all():
        metrics.update({f"final_detect_{k}": v for k, v in
                        detection(score, tr.is_noisy, config.noise_ratio).items()})
    if category is not None:
        for name in ("easy", "hard", "review"):
            metrics[f"n_{name}"] = int((category == name).sum())
    report(metrics)
    return metrics


def _figures(config, report, data, tr, score, traj, epoch, category, num_classes):
    """The histogram of the learnt parameters, clean vs noisy, and per class the
    enrichment figures of the instance parameters' trajectories (up to ``epoch``)."""
    fig = config.figures
    if not fig.enabled:
        return
    report.figure("sigma_hist.png", plots.sigma_histogram(score, tr.is_noisy))
    if category is None or not fig.enrich_classes:
        return
    images = np.asarray(data.x)[tr.sample_id] if data.is_image else None
    for c in range(min(fig.enrich_classes, num_classes)):
        members = np.flatnonzero(tr.observed_label == c)
        for name, figure in enrichment(
                traj["instance_sigma"][members, :epoch], category[members],
                None if images is None else images[members], title=class_name(data, c),
                strip_size=fig.strip_size, tsne_perplexity=fig.tsne_perplexity,
                tsne_thumbnails=fig.tsne_thumbnails,
                trajectories_per_label=fig.trajectories_per_label):
            report.figure(f"enrich_class{c:03d}_{name}.png", figure)
