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

import typing
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from raydiff.data import (INIT_STREAM, SPLIT_STREAM, clean_positions, derived_seed, prepare,
                          rng_for)
from raydiff.engine import accuracy, crop_flip, predict, step_schedule, train
from raydiff.engine.data_params import DataParameters
from raydiff import plots
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.config import Common, ConfigError, at_least, choice, ratio
from raydiff.models import MODELS, get_model
from raydiff.scores import auroc, average_precision, precision_at_k
from raydiff.scores.data_params import enrichment_labels

NAME = "data_params"
BATCH_STREAM = 4          # mini-batch order and augmentation draws
VARIANTS = {"baseline": (False, False), "class": (True, False), "instance": (False, True),
            "both": (True, True)}
BORDER = {"easy": "tab:green", "hard": "tab:red", "review": "tab:orange", "": "lightgray"}


@dataclass
class TrainConfig(Common):
    """The training keys shared with the ``retrain`` stage."""

    model: str = choice("small_cnn", lambda: sorted(MODELS))
    hidden: list[int] = field(default_factory=lambda: [20, 20])
    epochs: int = at_least(120, 1)              # the schedule's length
    early_stop: typing.Optional[int] = at_least(None, 1)   # stop after this epoch
    batch_size: int = at_least(128, 1)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: list[int] = field(default_factory=lambda: [80, 100])
    lr_gamma: float = 0.1
    augment: bool = False                       # random crop (pad 4) + flip, on the device
    normalize: str = choice("scalar", ["scalar", "minus_one_one", "none"])
    checkpoint_every: int = at_least(1, 1)
    eval_batch_size: int = at_least(1024, 1)    # no-grad evaluation; bounds its GPU memory

    SMOKE = {"epochs": 2, "batch_size": 64, "model": "simple_nn", "lr_milestones": []}

    @property
    def last_epoch(self):
        return min(self.epochs, self.early_stop or self.epochs)


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


def split_positions(data, sample_id, *, test_fraction, val_fraction, seed):
    """Positions (into the prepared subset) of the train, validation and test samples.

    The test split is the samples from the dataset's test part, or, when it has none,
    a random ``test_fraction``; ``val_fraction`` of the rest is held out for validation.
    """
    source = np.asarray(data.source_split)[sample_id]
    rng = rng_for(seed, SPLIT_STREAM)
    if (source == "test").any():
        test, pool = np.flatnonzero(source == "test"), np.flatnonzero(source != "test")
    else:
        order = rng.permutation(len(sample_id))
        n_test = int(len(order) * test_fraction)
        test, pool = np.sort(order[:n_test]), np.sort(order[n_test:])
    order = rng.permutation(pool)
    n_val = int(len(order) * val_fraction)
    return np.sort(order[n_val:]), np.sort(order[:n_val]), test


def _schedule(config):
    return step_schedule(config.lr, milestones=config.lr_milestones, gamma=config.lr_gamma)


def fit(config, report, x, y, *, num_classes, eval_sets, data_params=None, noisy=None,
        noise_ratio=0.0, record_logits=False, best_of="val", record_eval_logits=(),
        eval_logits_at=()):
    """Train ``config.model`` on ``x``, ``y`` (device tensors), reporting every epoch.

    eval_sets : {"test": (x, y), "val": (x, y)} accuracies reported per epoch as
        ``<name>_accuracy`` (percent).
    data_params : DataParameters or None (plain cross-entropy).
    noisy : bool array (N,) or None: when given, detection metrics of the current score
        (sigma*, or the training-pass loss without data parameters) per epoch.
    record_logits : also keep the logits every sample got in its training pass of every
        epoch, as trajectory ``logits`` of shape (N, E, C) (the training dynamics).
    best_of : the eval set whose accuracy picks the best epoch (the first epoch at the
        highest accuracy); None when ``eval_sets`` has no such set.
    record_eval_logits : names of eval sets whose eval-mode logits are kept every epoch,
        as trajectory ``<name>_logits`` of shape (M, E, C), so a caller can predict from
        any epoch (e.g. the best one) without keeping model snapshots.
    eval_logits_at : epochs (1-based) after which the model, in eval mode and without
        gradients, predicts every training sample, kept in order as trajectory
        ``eval_logits`` of shape (N, len(eval_logits_at), C) (e.g. EL2N's early model).

    Resumes from ``report.resume_state`` when set, so a restarted trial continues the
    same trajectory. Returns (model, trajectories dict of (N|C, E[, C]) float arrays,
    best epoch of the ``best_of`` set or None).
    """
    device = x.device
    n, epochs = len(x), config.last_epoch
    model = get_model(config.model, input_shape=x.shape[1:], num_classes=num_classes,
                      hidden=config.hidden, seed=derived_seed(config.seed, INIT_STREAM)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    dp = data_params or DataParameters(n, num_classes, y, learn_instance=False)
    generator = torch.Generator().manual_seed(derived_seed(config.seed, BATCH_STREAM))
    traj = {"train_loss": torch.zeros((n, epochs), dtype=torch.float16)}
    if dp.instance_log is not None:
        traj["instance_sigma"] = torch.zeros((n, epochs), dtype=torch.float16)
    if dp.class_log is not None:
        traj["class_sigma"] = torch.zeros((len(dp.class_log), epochs), dtype=torch.float16)
    if record_logits:
        traj["logits"] = torch.zeros((n, epochs, num_classes), dtype=torch.float16)
    eval_slot = {e: i for i, e in enumerate(eval_logits_at)}
    if eval_slot:
        traj["eval_logits"] = torch.zeros((n, len(eval_slot), num_classes))
    for name in record_eval_logits:
        traj[f"{name}_logits"] = torch.zeros((len(eval_sets[name][0]), epochs, num_classes))
    best = {"epoch": None, "accuracy": -1.0}
    start = 0
    if report.resume_state is not None:
        state = report.resume_state
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        dp.load_state_dict(state["data_params"])
        generator.set_state(state["generator"])
        for key in traj:
            traj[key].copy_(state["trajectories"][key])
        best, start = dict(state["best"]), int(state["epoch"])
    seen_loss = torch.zeros(n, device=device)
    seen_logits = torch.zeros((n, num_classes), device=device) if record_logits else None

    def loss_fn(logits, idx):
        with torch.no_grad():
            seen_loss[idx] = F.cross_entropy(logits, y[idx], reduction="none")
            if seen_logits is not None:
                seen_logits[idx] = logits.float()
        return dp.loss(logits, idx)

    def on_epoch(epoch, loss):
        traj["train_loss"][:, epoch - 1] = seen_loss.cpu()
        if seen_logits is not None:
            traj["logits"][:, epoch - 1] = seen_logits.cpu()
        if "instance_sigma" in traj:
            traj["instance_sigma"][:, epoch - 1] = torch.from_numpy(dp.instance_sigma())
        if "class_sigma" in traj:
            traj["class_sigma"][:, epoch - 1] = torch.from_numpy(dp.class_sigma())
        if epoch in eval_slot:
            traj["eval_logits"][:, eval_slot[epoch]] = predict(
                model, x, batch_size=config.eval_batch_size).float().cpu()
        metrics = {"loss": loss, "lr": opt.param_groups[0]["lr"]}
        for name, (ex, ey) in eval_sets.items():
            logits = predict(model, ex, batch_size=config.eval_batch_size)
            metrics[f"{name}_accuracy"] = 100 * accuracy(logits, ey)
            if f"{name}_logits" in traj:
                traj[f"{name}_logits"][:, epoch - 1] = logits.float().cpu()
        score = metrics.get(f"{best_of}_accuracy")
        if score is not None and score > best["accuracy"]:
            best.update(epoch=epoch, accuracy=score)
        if noisy is not None and noisy.any() and not noisy.all():
            metrics.update(detection(score_at(traj, y, epoch), noisy, noise_ratio))
        checkpoint = None
        if epoch % config.checkpoint_every == 0 or epoch == epochs:
            checkpoint = {"epoch": epoch, "model": model.state_dict(),
                          "optimizer": opt.state_dict(), "data_params": dp.state_dict(),
                          "generator": generator.get_state(), "best": dict(best),
                          "trajectories": {k: v.clone() for k, v in traj.items()}}
        report(metrics, step=epoch, checkpoint=checkpoint)
        return False

    result = train(model, x, y, epochs=epochs, optimizers=[opt, *dp.optimizers],
                   loss_fn=loss_fn, after_step=dp.clamp_, on_epoch=on_epoch,
                   batch_size=config.batch_size, generator=generator, start_epoch=start,
                   augment=crop_flip if config.augment else None, lr_schedule=_schedule(config))
    done = result.epochs_run
    return model, {k: (v if k == "eval_logits" else v[:, :done]).float().numpy()
                   for k, v in traj.items()}, best["epoch"]


def score_at(traj, y, epoch):
    """Per-sample score after ``epoch`` (1-based): sigma* = class + instance sigma when
    data parameters are learnt, else the sample's training-pass cross-entropy."""
    y = y.cpu().numpy()
    parts = []
    if "class_sigma" in traj:
        parts.append(np.asarray(traj["class_sigma"][:, epoch - 1], dtype=np.float64)[y])
    if "instance_sigma" in traj:
        parts.append(np.asarray(traj["instance_sigma"][:, epoch - 1], dtype=np.float64))
    if parts:
        return np.sum(parts, axis=0)
    return np.asarray(traj["train_loss"][:, epoch - 1], dtype=np.float64)


def detection(score, noisy, noise_ratio):
    """Detection metrics of ``score`` (N,) against the injected noise mask (N,)."""
    k = noise_ratio if 0 < noise_ratio < 1 else int(noisy.sum())
    return {"detect_precision_at_k": precision_at_k(score, noisy, k=k),
            "detect_auroc": auroc(score, noisy),
            "detect_ap": average_precision(score, noisy)}


def noisy_splits(config, data, device):
    """The prepared subset, its train / val / test positions and the observed labels.

    The noise is drawn over the whole subset by the one rule of :func:`raydiff.data.prepare`
    (so a training sample has the same observed label here as in every other experiment
    of the same seed), then the test samples get their true labels back; the validation
    samples keep theirs, as a real validation set would.
    """
    tensors = prepare(data, subset_size=config.subset_size, subset_seed=config.subset_seed,
                      noise_ratio=config.noise_ratio, noise_kind=config.noise_kind,
                      noise_seed=config.seed, normalize=config.normalize, device=device)
    train_pos, val_pos, test_pos = split_positions(
        data, tensors.sample_id, test_fraction=config.test_fraction,
        val_fraction=config.val_fraction, seed=config.seed)
    clean_positions(tensors, test_pos)
    return tensors, train_pos, val_pos, test_pos


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
    model, traj, best_epoch = fit(config, report, tr.x, tr.y, num_classes=tensors.num_classes,
                                  eval_sets=eval_sets, data_params=dp, noisy=tr.is_noisy,
                                  noise_ratio=config.noise_ratio)
    epochs_run = traj["train_loss"].shape[1]
    epoch = best_epoch if config.score_epoch == "best_val" and best_epoch else epochs_run
    score = score_at(traj, tr.y, epoch)

    for key, arr in traj.items():
        report.array(f"{key}.npy", arr.astype(np.float16))
    report.json("split.json", {"test_sample_id": te.sample_id.tolist(),
                               "val_sample_id": va.sample_id.tolist(), "score_epoch": epoch})
    observed = tr.observed_label
    flag_k = int(len(tr) * config.noise_ratio)
    hard = np.zeros(len(tr), dtype=bool)
    hard[np.argsort(-score, kind="stable")[:flag_k]] = True
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
        split="train", hard=hard if flag_k else None, score=score,
        **extra))
    report.figure("sigma_hist.png", plots.sigma_histogram(score, tr.is_noisy))

    if category is not None and config.enrich_classes:
        images = np.asarray(data.x)[tr.sample_id] if data.is_image else None
        for c in range(min(config.enrich_classes, tensors.num_classes)):
            members = np.flatnonzero(observed == c)
            for name, fig in enrichment_figures(
                    config, traj["instance_sigma"][members, :epoch], category[members],
                    None if images is None else images[members], title=_class_name(data, c)):
                report.figure(f"enrich_class{c:03d}_{name}.png", fig)

    test_logits = predict(model, te.x, batch_size=config.eval_batch_size)
    metrics = {"test_accuracy": 100 * accuracy(test_logits, test_y),
               "epochs_run": epochs_run, "score_epoch": epoch, "n_train": len(tr),
               "n_test": len(te)}
    if tr.is_noisy.any() and not tr.is_noisy.all():
        metrics.update({f"final_{k}": v for k, v in
                        detection(score, tr.is_noisy, config.noise_ratio).items()})
    if category is not None:
        for name in ("easy", "hard", "review"):
            metrics[f"n_{name}"] = int((category == name).sum())
    report(metrics)
    return metrics


def _class_name(data, c):
    names = getattr(data, "class_names", None) or []
    return f"class {c}" + (f" ({names[c]})" if c < len(names) else "")


def _thumb(img):
    """(C, H, W) uint8 -> an array imshow draws (H, W) grey or (H, W, 3) colour."""
    return img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)


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
                    ax.imshow(_thumb(images[i]), cmap=cmap)
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
                box = AnnotationBbox(OffsetImage(_thumb(images[i]), zoom=0.6, cmap=cmap),
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


def load_split(upstream):
    """(test sample ids, val sample ids) of a data_params trial."""
    split = upstream.json("split.json")
    return np.asarray(split["test_sample_id"], dtype=np.int64), np.asarray(
        split["val_sample_id"], dtype=np.int64)

