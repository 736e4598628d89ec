"""One classifier trained on (noisy) labels, checkpointed as it goes: the plain baseline.

The model trains on the observed labels of the subset; every epoch reports the training
loss and accuracy, and every ``checkpoint_every`` epochs (and at the last) a checkpoint of
the model, the optimiser and the mini-batch generator, so a trial killed mid-way resumes
where its last checkpoint left it and ends exactly where an uninterrupted run ends.

It trains with the shared supervised loop and keys (:func:`raydiff.engine.supervised.fit`,
:class:`raydiff.experiments.common.TrainConfig`: ``weight_decay``, ``lr_milestones`` /
``lr_gamma`` on MultiStepLR's schedule, ``augment``, ``normalize``, ``eval_batch_size``,
``early_stop``), so in a benchmark the baseline trains the same recipe as the methods it
is compared with; only the defaults differ (full batch, no decay, no milestones).

The per-sample score is the registered ``small_loss`` score of the final model's logits
(:func:`raydiff.scores.logits.small_loss`: the cross-entropy on the observed label;
mislabeled samples keep a high loss); ``hard`` marks the ``top_k(N, noise_ratio)``
highest (:func:`raydiff.scores.metrics.top_k_mask`; null without noise). ``epoch_seconds`` paces each epoch to at
least that wall time, so a small sweep can be watched on the dashboard, or struck by a
fault while its trials still run.
"""

import time
from dataclasses import dataclass, field

import torch

from raydiff.data import SMALL_LOSS_BATCH_STREAM, prepare
from raydiff.engine import accuracy, predict
from raydiff.engine.supervised import fit
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.common import TrainConfig
from raydiff.experiments.config import at_least, choice
from raydiff.models import MODELS
from raydiff.scores import auroc, get_score
from raydiff.scores.metrics import top_k_mask

NAME = "train_classifier"
SCORE = "small_loss"        # the registered score of the final logits this baseline reports


@dataclass
class Config(TrainConfig):
    # the shared training keys, with this baseline's defaults
    model: str = choice("simple_nn", lambda: sorted(MODELS))
    epochs: int = at_least(100, 1)
    batch_size: int | None = at_least(None, 1)      # None: full batch
    weight_decay: float = 0.0
    lr_milestones: list[int] = field(default_factory=list)
    eval_batch_size: int = at_least(8192, 1)        # no-grad evaluation; bounds its memory
    checkpoint_every: int = at_least(10, 1)
    epoch_seconds: float = at_least(0.0, 0.0)

    SMOKE = {"epochs": 20, "checkpoint_every": 5, "batch_size": None}


def run(config, report, data):
    tensors = prepare(data, subset_size=config.subset_size, subset_seed=config.subset_seed,
                      noise_ratio=config.noise_ratio, noise_kind=config.noise_kind,
                      noise_seed=config.seed, normalize=config.normalize, device=report.device)
    began = time.monotonic()

    def pace(epoch, start):
        if config.epoch_seconds:
            time.sleep(max(0.0, began + (epoch - start) * config.epoch_seconds - time.monotonic()))

    fitted = fit(config, report, tensors.x, tensors.y, num_classes=tensors.num_classes,
                 eval_sets={}, batch_stream=SMALL_LOSS_BATCH_STREAM, after_epoch=pace)
    model, start = fitted.model, fitted.start_epoch

    logits = predict(model, tensors.x, batch_size=config.eval_batch_size)
    observed = tensors.y
    loss = get_score(SCORE)(logits.double().cpu().numpy(), labels=tensors.observed_label)
    noisy = tensors.is_noisy
    report.table("per_sample.parquet", per_sample_table(
        sample_id=tensors.sample_id, label=tensors.label, observed_label=tensors.observed_label,
        is_noisy=noisy, noise_kind=config.noise_kind, split="train",
        hard=top_k_mask(loss, config.noise_ratio), score=loss))
    metrics = {
        "train_accuracy": 100 * accuracy(logits, observed),
        "clean_accuracy": 100 * accuracy(logits, torch.as_tensor(tensors.label,
                                                                 device=logits.device)),
        "start_epoch": start,
        "epochs_run": fitted.epochs_run - start,
    }
    if noisy.any() and not noisy.all():
        metrics["noise_auroc"] = auroc(loss, noisy)
    report(metrics)
    return metrics
