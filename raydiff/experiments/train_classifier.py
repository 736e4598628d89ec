"""One classifier trained on (noisy) labels, checkpointed as it goes: the plain baseline.

The model trains on the observed labels of the subset; every epoch reports the training
loss and accuracy, and every ``checkpoint_every`` epochs (and at the last) a checkpoint of
the model, the optimiser and the mini-batch generator, so a trial killed mid-way resumes
where its last checkpoint left it and ends exactly where an uninterrupted run ends.

It takes the training keys the other mini-batch experiments take (``weight_decay``,
``lr_milestones`` / ``lr_gamma`` on MultiStepLR's schedule, ``augment``, ``normalize``,
``eval_batch_size``), so in a benchmark the baseline trains the same recipe as the
methods it is compared with.

The per-sample score is the final model's cross-entropy on the observed label (the
small-loss criterion: mislabeled samples keep a high loss); ``hard`` marks the
``noise_ratio`` fraction with the highest loss. ``epoch_seconds`` paces each epoch to at
least that wall time, so a small sweep can be watched on the dashboard, or struck by a
fault while its trials still run.
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from raydiff.data import INIT_STREAM, derived_seed, prepare
from raydiff.engine import accuracy, crop_flip, predict, step_schedule, train
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.config import Common, at_least, choice
from raydiff.models import MODELS, get_model
from raydiff.scores import auroc

NAME = "train_classifier"
BATCH_STREAM = 5          # mini-batch order


@dataclass
class Config(Common):
    model: str = choice("simple_nn", lambda: sorted(MODELS))
    hidden: list[int] = field(default_factory=lambda: [20, 20])
    epochs: int = at_least(100, 1)
    lr: float = 0.1
    momentum: float = 0.9
    batch_size: int | None = at_least(None, 1)      # None: full batch
    weight_decay: float = 0.0
    lr_milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    augment: bool = False                           # random crop (pad 4) + flip, on the device
    normalize: str = choice("scalar", ["scalar", "minus_one_one", "none"])
    eval_batch_size: int = at_least(8192, 1)        # no-grad evaluation; bounds its memory
    checkpoint_every: int = at_least(10, 1)
    epoch_seconds: float = at_least(0.0, 0.0)

    SMOKE = {"epochs": 20, "checkpoint_every": 5}


def run(config, report, data):
    tensors = prepare(data, subset_size=config.subset_size, subset_seed=config.subset_seed,
                      noise_ratio=config.noise_ratio, noise_kind=config.noise_kind,
                      noise_seed=config.seed, normalize=config.normalize, device=report.device)
    model = get_model(config.model, input_shape=tensors.x.shape[1:],
                      num_classes=tensors.num_classes, hidden=config.hidden,
                      seed=derived_seed(config.seed, INIT_STREAM)).to(tensors.x.device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(derived_seed(config.seed, BATCH_STREAM))
    start = 0
    if report.resume_state is not None:
        state = report.resume_state
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start = int(state["epoch"])
        report.tag("raydiff.resumed_from_epoch", start)
    began = time.monotonic()

    def on_epoch(epoch, loss):
        if config.epoch_seconds:
            time.sleep(max(0.0, began + (epoch - start) * config.epoch_seconds - time.monotonic()))
        checkpoint = None
        if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
            checkpoint = {"epoch": epoch, "model": model.state_dict(),
                          "optimizer": opt.state_dict(), "generator": generator.get_state()}
        report({"loss": loss}, step=epoch, checkpoint=checkpoint)
        return False

    result = train(model, tensors.x, tensors.y, epochs=config.epochs, optimizers=[opt],
                   batch_size=config.batch_size, generator=generator, start_epoch=start,
                   on_epoch=on_epoch, augment=crop_flip if config.augment else None,
                   lr_schedule=step_schedule(config.lr, milestones=config.lr_milestones,
                                             gamma=config.lr_gamma))

    logits = predict(model, tensors.x, batch_size=config.eval_batch_size)
    observed = tensors.y
    loss = F.cross_entropy(logits, observed, reduction="none").cpu().numpy().astype(np.float64)
    noisy = tensors.is_noisy
    hard = np.zeros(len(loss), dtype=bool)
    hard[np.argsort(-loss, kind="stable")[:int(round(config.noise_ratio * len(loss)))]] = True
    report.table("per_sample.parquet", per_sample_table(
        sample_id=tensors.sample_id, label=tensors.label, observed_label=tensors.observed_label,
        is_noisy=noisy, noise_kind=config.noise_kind, split="train", hard=hard, score=loss))
    metrics = {
        "train_accuracy": 100 * accuracy(logits, observed),
        "clean_accuracy": 100 * accuracy(logits, torch.as_tensor(tensors.label,
                                                                 device=logits.device)),
        "start_epoch": start,
        "epochs_run": result.epochs_run - start,
    }
    if noisy.any() and not noisy.all():
        metrics["noise_auroc"] = auroc(loss, noisy)
    report(metrics)
    return metrics
