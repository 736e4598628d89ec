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

import numpy as np
import torch

from raydiff.data import INIT_STREAM, SMALL_LOSS_BATCH_STREAM, derived_seed
from raydiff.data.splits import config_tensors
from raydiff.engine import accuracy, predict
from raydiff.engine.packed import Pack, predict_packed
from raydiff.engine.supervised import fit
from raydiff.experiments import _packs
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
    tensors = config_tensors(config, report.device, data)
    began = time.monotonic()

    def pace(epoch, start):
        if config.epoch_seconds:
            time.sleep(max(0.0, began + (epoch - start) * config.epoch_seconds - time.monotonic()))

    fitted = fit(config, report, tensors.x, tensors.y, num_classes=tensors.num_classes,
                 eval_sets={}, batch_stream=SMALL_LOSS_BATCH_STREAM, after_epoch=pace)
    model, start = fitted.model, fitted.start_epoch

    logits = predict(model, tensors.x, batch_size=config.eval_batch_size)
    return _score(config, report, tensors, logits, start=start,
                  epochs_run=fitted.epochs_run - start)



def _score(config, report, tensors, logits, *, start, epochs_run):
    """The small-loss score of the final model's ``logits`` (N, C), its table and metrics."""
    observed = tensors.y
    loss = get_score(SCORE)(logits.double().cpu().numpy(), labels=tensors.observed_label)
    noisy = tensors.is_noisy
    report.table("per_sample.parquet", per_sample_table(
        sample_id=tensors.sample_id, label=tensors.label, observed_label=tensors.observed_label,
        **tensors.ground_truth(), split="train",
        hard=top_k_mask(loss, config.noise_ratio), score=loss))
    metrics = {
        "train_accuracy": 100 * accuracy(logits, observed),
        "clean_accuracy": 100 * accuracy(logits, torch.as_tensor(tensors.label,
                                                                 device=logits.device)),
        "start_epoch": start,
        "epochs_run": epochs_run,
    }
    if noisy.any() and not noisy.all():
        metrics["noise_auroc"] = auroc(loss, noisy)
    report(metrics)
    return metrics


# -- packs (raydiff.experiments._packs has the contract) --------------------------------

PACK_KEYS = ("seed", "noise_ratio", "noise_kind", "lr", "momentum", "weight_decay")


def packable(config):
    """SimpleNN without augmentation; a paced run (``epoch_seconds``) stays its own trial:
    it exists to be watched and struck per trial, checkpoints and all."""
    return (_packs.value(config, "model") == "simple_nn" and not _packs.value(config, "augment")
            and not _packs.value(config, "epoch_seconds"))


def run_pack(configs, reports, data):
    """:func:`run` for many configs in one pack: each model its own labels, init, shuffles
    (its own generator, drawn as ``run`` draws it), rate, momentum and decay. The pack
    checkpoints as one unit every ``checkpoint_every`` epochs and at the last
    (:func:`raydiff.experiments._packs.train_checkpointed`) and resumes from there, its
    ``start_epoch`` metric the epoch resumed from, as ``run``'s."""
    outcomes, ok, cfgs, device, tensors = _packs.start(
        configs, reports, data, packable=packable, run=run, prepare_one=config_tensors)
    if not ok:
        return outcomes
    first = cfgs[0]
    x = tensors[0].x
    pack = Pack.init([derived_seed(c.seed, INIT_STREAM) for c in cfgs], input_shape=x.shape[1:],
                     num_classes=tensors[0].num_classes, hidden=first.hidden, device=device)
    generators = [torch.Generator().manual_seed(derived_seed(c.seed, SMALL_LOSS_BATCH_STREAM)) for c in cfgs]

    def on_epoch(epoch, losses):
        for j, i in enumerate(ok):
            if np.isfinite(losses[j]):
                reports[i]({"loss": float(losses[j])}, step=epoch)

    result = _packs.train_checkpointed(
        pack, x, torch.stack([t.y for t in tensors]), epochs=first.last_epoch,
        reports=[reports[i] for i in ok], every=_packs.checkpoint_every(cfgs),
        batch_size=first.batch_size, momentum=[c.momentum for c in cfgs],
        weight_decay=[c.weight_decay for c in cfgs], generators=generators, on_epoch=on_epoch,
        lr_schedule=_packs.schedule([c.lr for c in cfgs], first.lr_milestones, first.lr_gamma))
    logits = predict_packed(pack, x, batch_size=first.eval_batch_size)
    start = result.start_epoch
    for j, i in enumerate(ok):
        if j in result.diverged:
            outcomes[i] = _packs.diverged_error(result.diverged[j])
            continue
        outcomes[i] = _packs.guarded(_score, configs[i], reports[i], tensors[j], logits[j],
                                     start=start, epochs_run=result.epochs_run - start)
    return outcomes
