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
from raydiff.experiments.common import TrainConfig, class_name, thumb
from raydiff.experiments.config import ConfigError, at_least, choice, ratio
from raydiff.scores.data_params import enrichment_labels
from raydiff.scores.metrics import detection, top_k_mask

NAME = "data_params"
VARIANTS = {"baseline": (False, False), "class": (True, False), "instance": (False, True),
            "both": (True, True)}
BORDER = {"easy": "tab:green", "hard": "tab:red", "review": "tab:orange", "": "lightgray"}


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
    # enrichment: thresholds on the instance sigma trajectory, and how much to draw
    n_easy: int = at_least(5, 0)
    hard_above: float = 2.0
    review_peak_above: float = 1.5
    review_final_at_most: float = 1.0
    enrich_classes: int = at_least(10, 0)      # draw the figures of the first n classes
    strip_size: int = at_least(8, 1)
    tsne_perplexity: float = 50.0
    tsne_thumbnails: int = at_least(150, 0)
    trajectories_per_label: int = at_least(3, 0)

    SMOKE = {"enrich_classes": 2, "tsne_thumbnails": 20}

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
        is_noisy=tr.is_noisy, noise_kind=config.noise_kind,
        split="train", hard=hard, score=score,
        **extra))
    report.figure("sigma_hist.png", plots.sigma_histogram(score, tr.is_noisy))

    if category is not None and config.enrich_classes:
        images = np.asarray(data.x)[tr.sample_id] if data.is_image else None
        for c in range(min(config.enrich_classes, tensors.num_classes)):
            members = np.flatnonzero(observed == c)
            for name, fig in enrichment_figures(
                    config, traj["instance_sigma"][members, :epoch], category[members],
                    None if images is None else images[members], title=class_name(data, c)):
                report.figure(f"enrich_class{c:03d}_{name}.png", fig)

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


def enrichment_figures(config, traj, category, images, *, title):
    """The figures of one class: [(name, Figure)] for the easy / hard / need-review strip
    (if ``images``), the t-SNE of the trajectories (thumbnails or dots) and a few
    trajectories of each label. ``traj`` (n, E) sigma; ``category`` (n,); ``images``
    (n, C, H, W) uint8 or None."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    final, peak = traj[:, -1], traj.max(axis=1)
    order = {"easy": np.argsort(final, kind="stable"), "hard": np.argsort(-final, kind="stable"),
             "review": np.argsort(-peak, kind="stable")}
    rows = {name: [i for i in order[name] if category[i] == name][:config.strip_size]
            for name in ("easy", "hard", "review")}
    out = []
    cmap = "gray" if images is not None and images.shape[1] == 1 else None
    if images is not None:
        fig, axes = plt.subplots(3, config.strip_size, squeeze=False,
                                 figsize=(1.2 * config.strip_size, 4.0))
        for r, name in enumerate(rows):
            for j, ax in enumerate(axes[r]):
                ax.set_xticks([]), ax.set_yticks([])
                if j < len(rows[name]):
                    i = rows[name][j]
                    ax.imshow(thumb(images[i]), cmap=cmap)
                    ax.set_title(f"{final[i]:.2f}", fontsize=7)
                    for spine in ax.spines.values():
                        spine.set_edgecolor(BORDER[name]), spine.set_linewidth(3)
                else:
                    ax.set_frame_on(False)     # keeps the row's label visible
            axes[r][0].set_ylabel(name, fontsize=9)
        fig.suptitle(f"{title}: easy / hard / need review (final sigma above each)", fontsize=9)
        out.append(("strip", fig))

    if len(traj) >= 5 and traj.shape[1] >= 2:
        from sklearn.manifold import TSNE
        perplexity = min(config.tsne_perplexity, (len(traj) - 1) / 3)
        xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0
                  ).fit_transform(traj.astype(np.float64))
        fig, ax = plt.subplots(figsize=(7, 7))
        ax.scatter(xy[:, 0], xy[:, 1], s=6, c=[BORDER[c] for c in category])
        if images is not None:
            # labelled samples first, then the rest, up to the thumbnail budget
            ranked = np.argsort([c == "" for c in category], kind="stable")
            for i in ranked[:config.tsne_thumbnails]:
                box = AnnotationBbox(OffsetImage(thumb(images[i]), zoom=0.6, cmap=cmap),
                                     xy[i], frameon=True, pad=0.1,
                                     bboxprops={"edgecolor": BORDER[category[i]], "lw": 2})
                ax.add_artist(box)
        ax.set_title(f"{title}: t-SNE of sigma trajectories (perplexity {perplexity:.0f})",
                     fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        out.append(("tsne", fig))

    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = np.arange(1, traj.shape[1] + 1)
    for name in ("easy", "hard", "review"):
        for j, i in enumerate(rows[name][:config.trajectories_per_label]):
            ax.plot(epochs, traj[i], color=BORDER[name], label=name if j == 0 else None)
    ax.set_xlabel("epoch"), ax.set_ylabel("instance sigma"), ax.set_yscale("log")
    ax.set_title(f"{title}: trajectories", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    out.append(("trajectories", fig))
    return out
