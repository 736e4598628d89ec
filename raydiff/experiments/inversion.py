"""The inversion point: class-manifold radii over training, and the stragglers it defines.

One SimpleNN is trained full-batch (lr 0.1, 500 epochs) on the whole subset. After every
epoch past ``inversion_start`` the radius of every class manifold (first hidden layer
after tanh, on the unit sphere, root-mean-square distance to the class centroid) and the
distances between class centroids are recorded. A class's inversion epoch is, by default
(``inversion_rule: minimum``), the minimum of its radius curve over the whole run after a
centred moving average over ``inversion_smoothing`` epochs (5); it counts only when the
smoothed radius rises after it and ``check_every`` epochs of the run follow it (otherwise
the radius is still falling: the class never inverted). ``inversion_rule: first_rise`` is
the original code's rule: every ``check_every`` epochs a class that has not inverted yet
inverts if its radius rose since the last check (it fires on early wiggles). The model's
state at each class's inversion is kept, and the stragglers of class c are its samples
that copy misclassifies
(``judge_by_final_model`` judges every class by the final model instead, the behaviour of
the original code, which stored a reference rather than a copy). A class that never
inverts makes the run start again from a new initialisation, at most ``max_retries``
times; then it is recorded as never inverted (metric, tag, and ``hard`` left undecided for
its samples).

Per sample, ``score`` is the epoch from which it stays correctly classified to the end
(``epochs + 1`` if it ends misclassified): higher = harder. ``parity`` is Ciceri et al.'s
original setting: labels mod 2, one hidden layer of 20 tanh units, per-pixel
standardisation.

Artifacts: ``radii.parquet`` (epoch, class, radius, the smoothed radius the minimum rule
reads (NaN where the window does not fit), mean distance to the other centroids),
``centroid_distances.npy`` (T, C, C), ``inversion.json`` (inversion epoch, stragglers and
training error at inversion per class) and ``per_sample.parquet``.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from raydiff.data import TensorData, prepare
from raydiff.engine import predict
from raydiff.engine.inversion import smooth
from raydiff import plots
from raydiff.experiments import _packs
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.common import InversionTraining, fit_watched
from raydiff.scores import auroc

NAME = "inversion"


@dataclass
class Config(InversionTraining):
    hidden: list[int] | None = None      # None: [20, 20], or [20] with parity
    parity: bool = False

    def hidden_layers(self):
        if self.hidden is not None:
            return self.hidden
        return [20] if self.parity else [20, 20]


def to_parity(tensors):
    """Ciceri et al.'s binary task: labels mod 2 (a flipped label that keeps its parity is
    no longer noisy) and every pixel standardised over the subset."""
    x = tensors.x.flatten(1)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-8)
    label = tensors.label % 2
    observed = tensors.y % 2
    return TensorData(x.view_as(tensors.x), observed, label, label != observed.cpu().numpy(),
                      tensors.sample_id, 2, tensors.is_hard, tensors.hardness)


def radii_table(epochs, radii, centroid_dist, smoothing=5):
    """Long table (epoch, class, radius, radius_smoothed, centroid_distance_mean) from (T,),
    (T, C), (T, C, C); ``radius_smoothed`` is the centred moving average over ``smoothing``
    epochs (:func:`raydiff.engine.inversion.smooth`, NaN at the ends where the window does
    not fit); ``centroid_distance_mean`` is the mean distance from the class centroid to
    the others."""
    t, c = radii.shape
    others = centroid_dist.sum(2) / max(c - 1, 1)
    smoothed = np.full((t, c), np.nan)
    inner = smooth(radii, smoothing)
    smoothed[smoothing // 2: smoothing // 2 + len(inner)] = inner
    return pd.DataFrame({
        "epoch": np.repeat(np.asarray(epochs, dtype=np.int64), c),
        "class": np.tile(np.arange(c, dtype=np.int64), t),
        "radius": radii.reshape(-1).astype(np.float64),
        "radius_smoothed": smoothed.reshape(-1),
        "centroid_distance_mean": others.reshape(-1).astype(np.float64),
    })


def _tensors(config, device, data):
    """The trial's prepared subset (parity: labels mod 2, ``digit`` kept beside)."""
    tensors = prepare(data, subset_size=config.subset_size, subset_seed=config.subset_seed,
                      noise_ratio=config.noise_ratio, hardness=config.hardness,
                      noise_seed=config.seed, normalize="none" if config.parity else "scalar",
                      device=device)
    digit = tensors.label
    if config.parity:
        tensors = to_parity(tensors)
    tensors.digit = digit
    return tensors


def run(config, report, data):
    tensors = _tensors(config, report.device, data)
    fitted = fit_watched(config, tensors, report, track_learning=True)
    return _score(config, report, data, tensors, fitted)


def _score(config, report, data, tensors, fitted):
    """Everything after the training: stragglers, learned epochs, artifacts, metrics."""
    digit = tensors.digit
    C, N = tensors.num_classes, len(tensors)
    observed = tensors.observed_label
    monitor = fitted.monitor
    margin_score, judged = monitor.straggler_margin(final_model=config.judge_by_final_model)
    decided = np.ones(N, dtype=bool) if config.judge_by_final_model else judged
    straggler = (margin_score > 0) & decided
    learned = monitor.learned_epoch()
    never = monitor.never_inverted()
    inversion = {int(c): int(e) for c, e in sorted(monitor.inversion.items())}
    epoch_of = np.array([inversion.get(c, -1) for c in range(C)])

    epochs, radii = monitor.radius_history()
    distances = monitor.centroid_distances()
    report.table("radii.parquet",
                 radii_table(epochs, radii, distances, smoothing=config.inversion_smoothing))
    report.array("centroid_distances.npy", distances.astype(np.float32))

    table = per_sample_table(
        sample_id=tensors.sample_id, label=tensors.label, observed_label=observed,
        **tensors.ground_truth(),
        split="train", hard=straggler, score=learned.astype(float),
        learned_epoch=learned, straggler_margin=margin_score, judged_at_inversion=judged,
        inversion_epoch=epoch_of[observed], **({"digit": digit} if config.parity else {}))
    table.loc[~decided, "hard"] = pd.NA
    report.table("per_sample.parquet", table)
    report.figure("radii.png", plots.radii(epochs, radii, inversion))

    sizes = np.bincount(observed, minlength=C)
    per_class = np.bincount(observed[straggler], minlength=C)
    class_error = [float(per_class[c] / sizes[c]) if decided[observed == c].any() and sizes[c]
                   else None for c in range(C)]
    error_at_inversion = float(straggler[decided].mean()) if decided.any() else float("nan")
    final_logits = predict(fitted.model, tensors.x)
    report.json("inversion.json", {
        "inversion_epoch": inversion, "never_inverted": never, "attempts": fitted.attempts,
        "kept_attempt": fitted.attempt, "rule": config.inversion_rule,
        "smoothing": config.inversion_smoothing,
        "judged_by": "final_model" if config.judge_by_final_model else "snapshot",
        "class_size": sizes.tolist(), "stragglers_per_class": per_class.tolist(),
        "train_error_at_inversion_per_class": class_error,
        "train_error_at_inversion": error_at_inversion})
    if never:
        report.tag("raydiff.never_inverted", ",".join(map(str, never)))

    metrics = {f"inversion_epoch_c{c}": e for c, e in inversion.items()}
    metrics.update({
        "inversion_epoch_mean": float(np.mean(list(inversion.values()))) if inversion else float("nan"),
        "classes_never_inverted": len(never),
        "n_stragglers": int(straggler.sum()),
        "train_error_at_inversion": error_at_inversion,
        "train_error_final": float((final_logits.argmax(1) != tensors.y).float().mean()),
        "learned_epoch_mean": float(learned.mean()),
        "attempts": fitted.attempts,
        "epochs_run": fitted.result.epochs_run,
    })
    if 0 < straggler[decided].sum() < decided.sum():
        # how well "learned late" recovers "misclassified at inversion"
        metrics["learned_epoch_auroc_stragglers"] = auroc(learned[decided], straggler[decided])
    if tensors.is_noisy.any():
        metrics["noisy_in_hard"] = float(straggler[tensors.is_noisy].mean())
        metrics["noise_auroc"] = auroc(learned.astype(float), tensors.is_noisy)
    report(metrics)
    return metrics


# -- packs (raydiff.experiments._packs has the contract) --------------------------------

PACK_KEYS = ("seed", "noise_ratio", "noise_kind", "lr", "max_retries", "judge_by_final_model")


def packable(config):
    return _packs.value(config, "model") == "simple_nn"


def run_pack(configs, reports, data):
    """:func:`run` for many configs: every training (and retry) of the pack as one
    computation, the radii of all models watched at once. Not checkpointed (the
    monitor's snapshots and radii history): a restarted pack trains again from epoch 0."""
    return _packs.run_inversion_pack(configs, reports, data, packable=packable,
                                     prepare_one=_tensors, track_learning=True, score=_score,
                                     run=run)


__all__ = ["Config", "NAME", "PACK_KEYS", "packable", "radii_table", "run", "run_pack",
           "to_parity"]
