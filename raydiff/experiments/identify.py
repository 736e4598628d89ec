"""Stage 1 of the in-class imbalance benchmark: which samples are hard.

One SimpleNN is trained full-batch on the whole subset while the class-manifold radii are
watched. Stragglers are judged per class by the model at that class's inversion point
(``inversion_rule``: the minimum of the lightly smoothed radius curve by default,
``first_rise`` for the original code's rule; see :mod:`raydiff.engine.inversion`); their
per-class counts k_c fix how many samples every strategy calls hard:

- ``stragglers``: the stragglers themselves (score: the margin at the class's inversion);
- ``confidence``: the top-k by negative max logit of the final model;
- ``energy``: the top-k by energy ``-logsumexp(logits)`` of the final model;

with k taken over the whole subset (``level: dataset``, k = sum_c k_c) or within each
observed class (``level: class``, k_c each). The table carries the straggler margin and
every registered score of the final logits (``score_<name>``: confidence, energy, margin,
small loss, ...), judged on the observed labels. Under label noise (``noise_ratio`` > 0),
confidence and energy take, as the original does, k_c = the straggler count of class c in
a run on the *clean* labels plus the noise share ``int(noise_ratio * N / C)``, added once:
the stragglers of the noisy run already hold most flipped labels, so counting them and
adding the share would count the noise twice. The clean count comes from a second
training inside the trial: the same seed, the same subset and initialisation, the true
labels (it doubles the trial's training time; logged as ``k_clean`` in inversion.json and
the ``k_clean_total`` / ``k_clean_c<c>`` metrics). At noise 0 the trial's own stragglers
are the clean ones and no second training runs.

A class that never inverts (after the retries) has no straggler count: its samples get
an undecided ``hard`` (null) under ``stragglers``; under confidence / energy so do the
samples whose top-k needs that count (the class, or the whole subset with
``level: dataset``). The run carries the ``raydiff.never_inverted`` tag and the
``classes_never_inverted`` metric, as in ``inversion``.

The original trained a second, fresh model for the confidence and energy scores; here
they come from the same training run, which halves the cost and scores the samples with
an equally trained model.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from raydiff.data import prepare
from raydiff.data.splits import config_tensors
from raydiff.engine import accuracy, predict
from raydiff import plots
from raydiff.experiments import _packs
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.common import InversionTraining, fit_watched
from raydiff.experiments.config import choice
from raydiff.scores import auroc, compute_all

NAME = "identify"
STRATEGIES = ["stragglers", "confidence", "energy"]


@dataclass
class Config(InversionTraining):
    strategy: str = choice("stragglers", STRATEGIES)
    level: str = choice("dataset", ["dataset", "class"])


def top_k_hard(score, k, *, observed, level, num_classes):
    """Boolean mask of the hard samples: the ``sum(k)`` highest scores overall
    (``level="dataset"``) or the ``k[c]`` highest within each observed class."""
    hard = np.zeros(len(score), dtype=bool)
    if level == "dataset":
        hard[np.argsort(-score, kind="stable")[:int(np.sum(k))]] = True
        return hard
    for c in range(num_classes):
        members = np.flatnonzero(observed == c)
        hard[members[np.argsort(-score[members], kind="stable")[:int(k[c])]]] = True
    return hard


def straggler_counts(monitor, observed, num_classes, *, final_model=False):
    """Stragglers of one watched run and their per-class counts.

    Returns ``(margin, judged, straggler, k, decided_class)``: the per-sample margin and
    mask of samples judged at their class's inversion (:meth:`InversionMonitor.
    straggler_margin`), the straggler mask (undecided samples: False), the per-class
    straggler counts k (C,) by observed class, and the (C,) mask of classes with a count
    (every class with ``final_model``; otherwise the classes that inverted).
    """
    margin_score, judged = monitor.straggler_margin(final_model=final_model)
    decided = np.ones(len(observed), dtype=bool) if final_model else judged
    straggler = (margin_score > 0) & decided
    k = np.bincount(observed[straggler], minlength=num_classes)
    decided_class = np.ones(num_classes, dtype=bool)
    if not final_model:
        decided_class[monitor.never_inverted()] = False
    return margin_score, judged, straggler, k, decided_class


def clean_tensors(config, data, device):
    """The trial's subset with its true labels (noise 0), for the clean-label training."""
    return prepare(data, subset_size=config.subset_size, subset_seed=config.subset_seed,
                   noise_ratio=0.0, noise_seed=config.seed, device=device)


def clean_straggler_counts(config, data, device, fitted=None):
    """Per-class straggler counts (C,) and the decided-class mask (C,) of a training on
    the *clean* labels: the same seed, subset and initialisations as the trial, noise 0
    (``fitted``: that training, when it ran already, e.g. in a pack)."""
    clean = clean_tensors(config, data, device)
    fitted = fitted if fitted is not None else fit_watched(config, clean, None)
    _, _, _, k, decided_class = straggler_counts(
        fitted.monitor, clean.observed_label, clean.num_classes,
        final_model=config.judge_by_final_model)
    return k, decided_class, fitted


def run(config, report, data):
    device = report.device
    tensors = config_tensors(config, device, data)
    fitted = fit_watched(config, tensors, report)
    return _score(config, report, data, tensors, fitted)


def _score(config, report, data, tensors, fitted, clean=None):
    """Everything after the training: stragglers, the strategy's hard set, artifacts and
    metrics (``clean``: the clean-label training when it ran already)."""
    observed = tensors.observed_label
    margin_score, judged, straggler, k_noisy, decided_class = straggler_counts(
        fitted.monitor, observed, tensors.num_classes, final_model=config.judge_by_final_model)
    logits = predict(fitted.model, tensors.x).cpu().numpy()
    # the straggler margin is this experiment's own; the final logits give every registered
    # score of the `logits` input (confidence and energy among them), judged on the
    # observed labels
    scores = {"stragglers": margin_score, **compute_all("logits", logits, observed)}
    if config.strategy == "stragglers":
        chosen = _Choice(straggler, decided_class[observed], k_noisy, decided_class)
    else:
        chosen = _top_k_choice(config, data, report.device, tensors, scores[config.strategy],
                               k_noisy, decided_class, clean)
    _write(config, report, tensors, fitted, scores, straggler, judged, chosen)
    noisy, decided = tensors.is_noisy, chosen.decided
    hard_decided = chosen.hard & decided
    never = fitted.monitor.never_inverted()
    metrics = {
        **chosen.metrics,
        "n_hard": int(hard_decided.sum()),
        "n_undecided": int((~decided).sum()),
        "n_stragglers": int(straggler.sum()),
        "hard_fraction": float(hard_decided[decided].mean()) if decided.any() else float("nan"),
        "train_accuracy": accuracy(torch.as_tensor(logits), torch.as_tensor(observed)),
        "straggler_error_at_inversion": float(straggler[judged].mean()) if judged.any() else float("nan"),
        "classes_never_inverted": len(never),
        "attempts": fitted.attempts,
        "epochs_run": fitted.result.epochs_run,
    }
    if (noisy & decided).any():
        metrics["noisy_in_hard"] = float(chosen.hard[noisy & decided].mean())   # noise recall
        metrics["hard_precision_noisy"] = (float(noisy[hard_decided].mean())
                                           if hard_decided.any() else 0.0)
    if noisy.any():
        metrics["noise_auroc"] = auroc(scores[config.strategy], noisy)
    report(metrics)
    return metrics


@dataclass
class _Choice:
    """The strategy's hard set: the mask, which samples it decided (a count that does not
    exist leaves its samples undecided), the per-class counts k, the classes with a
    count, and what the choice adds to inversion.json and the metrics."""
    hard: np.ndarray
    decided: np.ndarray
    k: np.ndarray
    decided_class: np.ndarray
    notes: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


def _top_k_choice(config, data, device, tensors, score, k_noisy, decided_class, clean):
    """Confidence / energy: the top-k of ``score`` with k_c the straggler counts of the
    clean labels plus the noise share (see the module docstring)."""
    C, N = tensors.num_classes, len(tensors)
    notes, metrics = {}, {}
    if config.noise_ratio > 0:
        k_clean, decided_class, clean = clean_straggler_counts(config, data, device, clean)
        notes = {"k_clean": k_clean.tolist(),
                 "k_clean_never_inverted": clean.monitor.never_inverted(),
                 "k_clean_attempts": clean.attempts}
        metrics = {**{f"k_clean_c{c}": int(k_clean[c]) for c in range(C)},
                   "k_clean_total": int(k_clean.sum()), "k_clean_attempts": clean.attempts}
    else:
        k_clean = k_noisy
    share = int(config.noise_ratio * N / C)
    notes["noise_share"] = share
    k = k_clean + share
    hard = top_k_hard(score, k, observed=tensors.observed_label, level=config.level,
                      num_classes=C)
    decided = (decided_class[tensors.observed_label] if config.level == "class"
               else np.full(N, decided_class.all()))
    return _Choice(hard, decided, k, decided_class, notes, metrics)


def _write(config, report, tensors, fitted, scores, straggler, judged, chosen):
    """The per-sample table, the radii figure, inversion.json, the logit trajectory and
    the tags of classes that never inverted or stayed undecided."""
    monitor, observed = fitted.monitor, tensors.observed_label
    inversion = {int(c): int(e) for c, e in sorted(monitor.inversion.items())}
    never = monitor.never_inverted()
    undecided_classes = [int(c) for c in np.flatnonzero(~chosen.decided_class)]
    epoch_of = np.array([inversion.get(c, -1) for c in range(tensors.num_classes)])
    table = per_sample_table(
        sample_id=tensors.sample_id, label=tensors.label, observed_label=observed,
        **tensors.ground_truth(),
        split="train", hard=chosen.hard, score=scores[config.strategy],
        straggler=straggler, judged_at_inversion=judged, inversion_epoch=epoch_of[observed],
        **{f"score_{name}": s for name, s in scores.items()})
    table.loc[~chosen.decided, "hard"] = pd.NA
    report.table("per_sample.parquet", table)
    report.figure("radii.png", plots.radii(*monitor.radius_history(), inversion))
    report.json("inversion.json", {
        "inversion_epoch": inversion, "never_inverted": never, "attempts": fitted.attempts,
        "rule": config.inversion_rule, "smoothing": config.inversion_smoothing,
        "judged_by": "final_model" if config.judge_by_final_model else "snapshot",
        "hard_per_class": chosen.k.tolist(), "undecided_classes": undecided_classes,
        **chosen.notes})
    if fitted.result.dynamics is not None:
        report.array("dynamics_logits.npy", fitted.result.dynamics.logits.astype(np.float16))
        report.array("dynamics_epochs.npy", fitted.result.dynamics.epochs)
    if never:
        report.tag("raydiff.never_inverted", ",".join(map(str, never)))
    if undecided_classes:
        report.tag("raydiff.undecided_classes", ",".join(map(str, undecided_classes)))


# -- packs (raydiff.experiments._packs has the contract) --------------------------------

# keys that may differ inside a pack: each model's init, labels, rate and post-processing
PACK_KEYS = ("seed", "noise_ratio", "noise_kind", "lr", "max_retries", "strategy", "level",
             "judge_by_final_model")


def packable(config):
    return _packs.value(config, "model") == "simple_nn"


def PACK_MODELS(config):
    # confidence / energy under noise train a second, clean-label model
    noisy = (_packs.value(config, "noise_ratio") or 0) > 0
    return 2 if noisy and _packs.value(config, "strategy") != "stragglers" else 1


def run_pack(configs, reports, data):
    """:func:`run` for many configs, trained as packs: the noisy-label trainings of every
    config in one pack (retries: a pack of the configs that need another attempt), the
    clean-label trainings confidence / energy need under noise in a second one (one per
    distinct seed / rate: configs that differ only in strategy or level share it).
    Not checkpointed: the inversion monitor's snapshots and radii history would have to
    travel with the pack's state, so a restarted pack trains again from epoch 0."""
    return _packs.run_inversion_pack(configs, reports, data, packable=packable,
                                     prepare_one=config_tensors, track_learning=False, score=_score,
                                     run=run, clean_tensors=_clean_for_pack)


def _clean_for_pack(config, data, device):
    """The clean-label tensors a pack trains once per (seed, rate, retries) when this
    config's strategy needs them (confidence / energy under noise), else None."""
    if config.strategy != "stragglers" and config.noise_ratio > 0:
        return clean_tensors(config, data, device)
    return None

