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

The final model is read four ways, the registry's inputs this experiment produces
(:data:`INPUTS`), and every score registered under each becomes a ``score_<name>`` column:
its logits (``logits``: small loss, confidence, energy, margin), its penultimate
embeddings (``embeddings``: prototypicality), its softmax under ``mc_passes`` passes with
dropout on (``dropout_probs``: MC-dropout confidence agreement; only for a model with
dropout, ``lenet``) and under ALLSH's augmentations (``augmented_probs``: flip,
brightness, noise, pixelation). ``score`` is the one named by ``method`` (default
``small_loss``: the cross-entropy on the observed label; mislabelled samples keep a high
loss); ``hard`` marks the ``top_k(N, noise_ratio)`` highest
(:func:`raydiff.scores.metrics.top_k_mask`; null without noise). ``epoch_seconds`` paces each epoch to at
least that wall time, so a small sweep can be watched on the dashboard, or struck by a
fault while its trials still run.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from raydiff.data import BATCH_STREAM, INIT_STREAM, SMALL_LOSS_BATCH_STREAM, derived_seed
from raydiff.data.splits import config_tensors
from raydiff.engine import accuracy
from raydiff.engine.packed import Pack
from raydiff.engine.perturb import (augmented_probs, has_dropout, logits_and_penultimate,
                                    mc_dropout_probs)
from raydiff.engine.supervised import fit, make_model
from raydiff.experiments import _packs
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.common import AUGMENT_DRAW, MC_DROPOUT_DRAW, TrainConfig
from raydiff.experiments.config import ConfigError, at_least, choice
from raydiff.models import MODELS
from raydiff.scores import auroc, compute_all, needs_of, scores_for
from raydiff.scores.metrics import top_k_mask

NAME = "train_classifier"
# the registry's inputs this experiment produces from its final model; it computes every
# score of each (dropout_probs only when the model has dropout)
INPUTS = ("logits", "embeddings", "dropout_probs", "augmented_probs")
METHODS = sorted(name for needs in INPUTS for name in scores_for(needs))


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
    method: str = choice("small_loss", METHODS)     # the score in the `score` column
    mc_passes: int = at_least(10, 2)                # MC-dropout passes (H-CAT: 10)

    SMOKE = {"epochs": 20, "checkpoint_every": 5, "batch_size": None}


def run(config, report, data):
    tensors = config_tensors(config, report.device, data)
    _check_method(config, tensors)
    began = time.monotonic()

    def pace(epoch, start):
        if config.epoch_seconds:
            time.sleep(max(0.0, began + (epoch - start) * config.epoch_seconds - time.monotonic()))

    fitted = fit(config, report, tensors.x, tensors.y, num_classes=tensors.num_classes,
                 eval_sets={}, batch_stream=SMALL_LOSS_BATCH_STREAM, after_epoch=pace)
    model, start = fitted.model, fitted.start_epoch

    return _score(config, report, tensors, model, start=start,
                  epochs_run=fitted.epochs_run - start)


def _check_method(config, tensors):
    """Refuse, before any training, a ``method`` whose input the model cannot give."""
    if config.method in scores_for("dropout_probs") and not has_dropout(make_model(
            config, tensors.x.shape[1:], tensors.num_classes)):
        raise ConfigError(f"method={config.method!r} needs a model with dropout (MC-dropout "
                          f"passes); model={config.model!r} has none: use model: lenet or "
                          f"another method")


def model_inputs(config, model, x):
    """``{input: values}`` of every registry input the trained ``model`` gives on ``x``
    (see :data:`INPUTS`), as float64 numpy arrays; ``dropout_probs`` only when the model
    has a dropout layer."""
    bs = config.eval_batch_size
    logits, embeddings = logits_and_penultimate(model, x, batch_size=bs)
    out = {"logits": logits, "embeddings": embeddings}
    if has_dropout(model):
        out["dropout_probs"] = mc_dropout_probs(
            model, x, passes=config.mc_passes, batch_size=bs,
            seed=derived_seed(config.seed, BATCH_STREAM, MC_DROPOUT_DRAW))
    generator = torch.Generator().manual_seed(derived_seed(config.seed, BATCH_STREAM,
                                                           AUGMENT_DRAW))
    out["augmented_probs"], _ = augmented_probs(model, x, generator=generator, batch_size=bs,
                                                logits=logits)
    return {k: v.double().cpu().numpy() for k, v in out.items()}


def _score(config, report, tensors, model, *, start, epochs_run):
    """Every registered score of the inputs the final ``model`` gives, its table and metrics."""
    observed = tensors.y
    inputs = model_inputs(config, model, tensors.x)
    scores = {}
    for needs, values in inputs.items():
        scores.update(compute_all(needs, values, tensors.observed_label))
    if config.method not in scores:
        raise ValueError(f"method={config.method!r} needs input "
                         f"{needs_of(config.method)!r}, which model {config.model!r} does not "
                         f"give (MC dropout needs a model with dropout: lenet)")
    score = scores[config.method]
    logits = torch.from_numpy(inputs["logits"]).to(observed.device)
    noisy = tensors.is_noisy
    report.table("per_sample.parquet", per_sample_table(
        sample_id=tensors.sample_id, label=tensors.label, observed_label=tensors.observed_label,
        **tensors.ground_truth(), split="train",
        hard=top_k_mask(score, config.noise_ratio), score=score,
        **{f"score_{k}": v for k, v in scores.items()}))
    metrics = {
        "train_accuracy": 100 * accuracy(logits, observed),
        "clean_accuracy": 100 * accuracy(logits, torch.as_tensor(tensors.label,
                                                                 device=logits.device)),
        "start_epoch": start,
        "epochs_run": epochs_run,
    }
    if noisy.any() and not noisy.all():
        metrics["noise_auroc"] = auroc(score, noisy)
    report(metrics)
    return metrics


# -- packs (raydiff.experiments._packs has the contract) --------------------------------

PACK_KEYS = ("seed", "noise_ratio", "noise_kind", "lr", "momentum", "weight_decay", "method")


def packable(config):
    """SimpleNN without augmentation; a paced run (``epoch_seconds``) stays its own trial:
    it exists to be watched and struck per trial, checkpoints and all."""
    return (_packs.value(config, "model") == "simple_nn" and not _packs.value(config, "augment")
            and not _packs.value(config, "epoch_seconds")
            and _packs.value(config, "optimizer", "sgd") == "sgd")


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
    start = result.start_epoch
    for j, i in enumerate(ok):
        if j in result.diverged:
            outcomes[i] = _packs.diverged_error(result.diverged[j])
            continue
        outcomes[i] = _packs.guarded(_score, configs[i], reports[i], tensors[j],
                                     pack.model(j), start=start,
                                     epochs_run=result.epochs_run - start)
    return outcomes
