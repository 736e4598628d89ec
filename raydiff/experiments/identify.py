"""Stage 1 of the in-class imbalance benchmark: which samples are hard.

One SimpleNN is trained full-batch on the whole subset while the class-manifold radii are
watched. Stragglers are judged per class by the model at that class's inversion point;
their per-class counts k_c fix how many samples every strategy calls hard:

- ``stragglers``: the stragglers themselves (score: the margin at the class's inversion);
- ``confidence``: the top-k by negative max logit of the final model;
- ``energy``: the top-k by energy ``-logsumexp(logits)`` of the final model;

with k taken over the whole subset (``level: dataset``, k = sum_c k_c) or within each
observed class (``level: class``, k_c each). Under label noise each k_c grows by
``int(noise_ratio * N / C)``. The original trained a second, fresh model for the
confidence and energy scores; here they come from the same training run, which halves
the cost and scores the samples with an equally trained model.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from raydiff.data import INIT_STREAM, derived_seed, prepare
from raydiff.engine import accuracy, predict
from raydiff.engine.inversion import train_with_inversion
from raydiff import plots
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.config import Common, ConfigError, at_least, choice
from raydiff.models import MODELS, get_model
from raydiff.scores import auroc, confidence, energy

NAME = "identify"
STRATEGIES = ["stragglers", "confidence", "energy"]


@dataclass
class InversionTraining(Common):
    """Keys of the full-batch SimpleNN training watched for the inversion point, shared by
    every experiment that finds stragglers (``identify``, ``inversion``)."""

    model: str = choice("simple_nn", lambda: sorted(MODELS))
    hidden: list[int] = field(default_factory=lambda: [20, 20])
    epochs: int = at_least(500, 1)
    lr: float = 0.1
    inversion_start: int = at_least(20, 0)
    check_every: int = at_least(5, 1)
    max_retries: int = at_least(2, 0)
    judge_by_final_model: bool = False
    record_every: int = at_least(0, 0)
    subset_size: int | None = at_least(20000, 10)

    SMOKE = {"epochs": 40, "inversion_start": 5, "check_every": 2}

    def check(self, where):
        if self.inversion_start + self.check_every > self.epochs:
            raise ConfigError(
                f"{where}: inversion_start + check_every = "
                f"{self.inversion_start} + {self.check_every} > epochs = {self.epochs}: "
                f"no inversion check would ever run; raise epochs or lower inversion_start "
                f"or check_every")

    def hidden_layers(self):
        return self.hidden


@dataclass
class Config(InversionTraining):
    strategy: str = choice("stragglers", STRATEGIES)
    level: str = choice("dataset", ["dataset", "class"])


def fit(config, data, report=None, *, track_learning=False):
    """Train ``config.model`` on ``data`` (TensorData) while the radii are watched,
    retrying with a new initialisation while a class never inverts (at most
    ``config.max_retries`` times); returns the :class:`InversionRun` kept. The loss goes
    to ``report`` as ``loss`` (``loss_retry<k>`` for the k-th new initialisation)."""

    def make_model(attempt):
        return get_model(config.model, input_shape=data.x.shape[1:],
                         num_classes=data.num_classes, hidden=config.hidden_layers(),
                         seed=derived_seed(config.seed, INIT_STREAM, attempt)).to(data.x.device)

    def on_epoch(epoch, loss, attempt):
        if report is not None:
            report({"loss" if attempt == 0 else f"loss_retry{attempt}": loss}, step=epoch)

    return train_with_inversion(
        make_model, data.x, data.y, data.num_classes, epochs=config.epochs, lr=config.lr,
        start=config.inversion_start, check_every=config.check_every,
        max_retries=config.max_retries, track_learning=track_learning, on_epoch=on_epoch,
        record_every=config.record_every)


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


def run(config, report, data):
    device = report.device
    tensors = prepare(data, subset_size=config.subset_size, subset_seed=config.subset_seed,
                      noise_ratio=config.noise_ratio, noise_seed=config.seed, device=device)
    observed = tensors.observed_label
    C, N = tensors.num_classes, len(tensors)
    fitted = fit(config, tensors, report)
    model, monitor, result, attempts = fitted.model, fitted.monitor, fitted.result, fitted.attempts

    margin_score, judged = monitor.straggler_margin(final_model=config.judge_by_final_model)
    straggler = margin_score > 0
    k = np.bincount(observed[straggler], minlength=C)
    logits = predict(model, tensors.x).cpu().numpy()
    scores = {"stragglers": margin_score, "confidence": confidence(logits),
              "energy": energy(logits)}
    if config.strategy == "stragglers":
        hard = straggler
    else:
        k = k + int(config.noise_ratio * N / C)
        hard = top_k_hard(scores[config.strategy], k, observed=observed, level=config.level,
                          num_classes=C)
    score = scores[config.strategy]

    inversion = {int(c): int(e) for c, e in sorted(monitor.inversion.items())}
    never = monitor.never_inverted()
    epoch_of = np.array([inversion.get(c, -1) for c in range(C)])
    table = per_sample_table(
        sample_id=tensors.sample_id, label=tensors.label, observed_label=observed,
        is_noisy=tensors.is_noisy, split="train", hard=hard, score=score,
        straggler=straggler, judged_at_inversion=judged, inversion_epoch=epoch_of[observed],
        **{f"score_{name}": s for name, s in scores.items()})
    report.table("per_sample.parquet", table)
    report.figure("radii.png", plots.radii(*monitor.radius_history(), inversion))
    report.json("inversion.json", {"inversion_epoch": inversion, "never_inverted": never,
                                   "attempts": attempts, "hard_per_class": k.tolist()})
    if result.dynamics is not None:
        report.array("dynamics_logits.npy", result.dynamics.logits.astype(np.float16))
        report.array("dynamics_epochs.npy", result.dynamics.epochs)
    if never:
        report.tag("raydiff.never_inverted", ",".join(map(str, never)))

    noisy = tensors.is_noisy
    metrics = {
        "n_hard": int(hard.sum()),
        "n_stragglers": int(straggler.sum()),
        "hard_fraction": float(hard.mean()),
        "train_accuracy": accuracy(torch.as_tensor(logits), torch.as_tensor(observed)),
        "straggler_error_at_inversion": float(straggler[judged].mean()) if judged.any() else float("nan"),
        "classes_never_inverted": len(never),
        "attempts": attempts,
        "epochs_run": result.epochs_run,
    }
    if noisy.any():
        metrics["noisy_in_hard"] = float(hard[noisy].mean())        # recall of injected noise
        metrics["hard_precision_noisy"] = float(noisy[hard].mean()) if hard.any() else 0.0
        metrics["noise_auroc"] = auroc(score, noisy)
    report(metrics)
    return metrics
