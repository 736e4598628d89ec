"""The supervised training loop every classifier experiment runs, with its checkpoints.

:func:`fit` builds the model and optimiser from the shared training keys
(:class:`raydiff.experiments.common.TrainConfig`), trains with :func:`raydiff.engine.train`
(mini-batches indexed on the device, MultiStepLR's schedule, optional crop + flip),
optionally with data parameters, reports every epoch, records the per-sample
trajectories a method reads (training loss, logits, sigma, eval-mode logits), and saves
and restores its whole state through :mod:`raydiff.engine.state`, so a trial killed
mid-way resumes where its last checkpoint left it and ends where an uninterrupted run
ends.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from raydiff.data import INIT_STREAM, derived_seed
from raydiff.data.streams import BATCH_STREAM
from raydiff.engine.data_params import DataParameters
from raydiff.engine.state import restore_state, save_state
from raydiff.engine.train import accuracy, crop_flip, predict, step_schedule, train
from raydiff.models import get_model
from raydiff.scores.metrics import detection


@dataclass
class Fitted:
    """What :func:`fit` returns.

    model : the trained network (last epoch run)
    trajectories : {name: float array}; ``train_loss`` (N, E), ``instance_sigma`` (N, E),
        ``class_sigma`` (C, E), ``logits`` (N, E, C), ``<eval set>_logits`` (M, E, C) over
        the E epochs run; ``eval_logits`` (N, len(eval_logits_at), C)
    best_epoch : first epoch at the best accuracy of the ``best_of`` set, or None
    start_epoch : the epoch the run resumed from (0 for a fresh run)
    epochs_run : the last epoch trained
    """

    model: torch.nn.Module
    trajectories: dict
    best_epoch: int | None
    start_epoch: int
    epochs_run: int


def schedule(config):
    """The learning rate per epoch of ``config`` (MultiStepLR's, see :func:`step_schedule`)."""
    return step_schedule(config.lr, milestones=config.lr_milestones, gamma=config.lr_gamma)


def make_model(config, input_shape, num_classes, *, run=None):
    """``config.model`` initialised from the INIT stream of ``config.seed`` (``run`` tells
    extra models of one trial apart)."""
    more = () if run is None else (run,)
    return get_model(config.model, input_shape=input_shape, num_classes=num_classes,
                     hidden=config.hidden, seed=derived_seed(config.seed, INIT_STREAM, *more))


def fit(config, report, x, y, *, num_classes, eval_sets, data_params=None, noisy=None,
        noise_ratio=0.0, record_logits=False, best_of="val", record_eval_logits=(),
        eval_logits_at=(), batch_stream=BATCH_STREAM, after_epoch=None):
    """Train ``config.model`` on ``x``, ``y`` (device tensors), reporting every epoch.

    config : the shared training keys (model, hidden, seed, epochs / last_epoch,
        batch_size, lr, momentum, weight_decay, lr_milestones, lr_gamma, augment,
        checkpoint_every, eval_batch_size).
    eval_sets : {"test": (x, y), "val": (x, y)} accuracies reported per epoch as
        ``<name>_accuracy`` (percent).
    data_params : DataParameters or None (plain cross-entropy).
    noisy : bool array (N,) or None: when given, detection metrics of the current score
        (sigma*, or the training-pass loss without data parameters) per epoch, as
        ``detect_<auroc|ap|precision_at_k>``.
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
    batch_stream : the random stream (:mod:`raydiff.data.streams`) of the batch order.
    after_epoch : callable(epoch, start_epoch), optional, runs after every epoch before
        its report (e.g. pacing).

    Resumes from ``report.resume_state`` when set (tagging the run
    ``raydiff.resumed_from_epoch``), so a restarted trial continues the same trajectory.
    """
    device = x.device
    n, epochs = len(x), config.last_epoch
    model = make_model(config, x.shape[1:], num_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    dp = data_params or DataParameters(n, num_classes, y, learn_instance=False)
    generator = torch.Generator().manual_seed(derived_seed(config.seed, batch_stream))
    traj = _empty_trajectories(n, epochs, num_classes, dp, record_logits=record_logits,
                               eval_logits_at=eval_logits_at,
                               eval_sizes={name: len(eval_sets[name][0])
                                           for name in record_eval_logits})
    eval_slot = {e: i for i, e in enumerate(eval_logits_at)}
    best = {"epoch": None, "accuracy": -1.0}
    parts = {"modules": {"model": model, "data_params": dp}, "optimizers": {"model": opt},
             "generators": {"batch": generator}}
    start = 0
    if report.resume_state is not None:
        start, extra = restore_state(report.resume_state, **parts)
        for key in traj:
            traj[key].copy_(extra["trajectories"][key])
        best = dict(extra["best"])
        report.tag("raydiff.resumed_from_epoch", start)
    seen_loss = torch.zeros(n, device=device)
    seen_logits = torch.zeros((n, num_classes), device=device) if record_logits else None

    def loss_fn(logits, idx):
        with torch.no_grad():
            seen_loss[idx] = F.cross_entropy(logits, y[idx], reduction="none")
            if seen_logits is not None:
                seen_logits[idx] = logits.float()
        return dp.loss(logits, idx)

    def on_epoch(epoch, loss):
        _record_training_pass(traj, epoch, seen_loss, seen_logits, dp)
        if epoch in eval_slot:
            traj["eval_logits"][:, eval_slot[epoch]] = predict(
                model, x, batch_size=config.eval_batch_size).float().cpu()
        metrics = {"loss": loss, "lr": opt.param_groups[0]["lr"],
                   **_evaluate(model, eval_sets, traj, epoch, config.eval_batch_size)}
        score = metrics.get(f"{best_of}_accuracy")
        if score is not None and score > best["accuracy"]:
            best.update(epoch=epoch, accuracy=score)
        if noisy is not None and noisy.any() and not noisy.all():
            metrics.update({f"detect_{k}": v for k, v in
                            detection(score_at(traj, y, epoch), noisy, noise_ratio).items()})
        if after_epoch is not None:
            after_epoch(epoch, start)
        checkpoint = None
        if epoch % config.checkpoint_every == 0 or epoch == epochs:
            checkpoint = save_state(epoch, **parts, best=dict(best),
                                    trajectories={k: v.clone() for k, v in traj.items()})
        report(metrics, step=epoch, checkpoint=checkpoint)
        return False

    result = train(model, x, y, epochs=epochs, optimizers=[opt, *dp.optimizers],
                   loss_fn=loss_fn, after_step=dp.clamp_, on_epoch=on_epoch,
                   batch_size=config.batch_size, generator=generator, start_epoch=start,
                   augment=crop_flip if config.augment else None, lr_schedule=schedule(config))
    done = result.epochs_run
    traj = {k: (v if k == "eval_logits" else v[:, :done]).float().numpy()
            for k, v in traj.items()}
    return Fitted(model, traj, best["epoch"], start, done)


def _empty_trajectories(n, epochs, num_classes, dp, *, record_logits, eval_logits_at,
                        eval_sizes):
    """The trajectories :func:`fit` fills, zeroed (see :class:`Fitted`); ``eval_sizes``
    {name: M} of the eval sets whose logits are kept every epoch."""
    traj = {"train_loss": torch.zeros((n, epochs), dtype=torch.float16)}
    if dp.instance_log is not None:
        traj["instance_sigma"] = torch.zeros((n, epochs), dtype=torch.float16)
    if dp.class_log is not None:
        traj["class_sigma"] = torch.zeros((len(dp.class_log), epochs), dtype=torch.float16)
    if record_logits:
        traj["logits"] = torch.zeros((n, epochs, num_classes), dtype=torch.float16)
    if len(eval_logits_at):
        traj["eval_logits"] = torch.zeros((n, len(eval_logits_at), num_classes))
    for name, size in eval_sizes.items():
        traj[f"{name}_logits"] = torch.zeros((size, epochs, num_classes))
    return traj


def _record_training_pass(traj, epoch, seen_loss, seen_logits, dp):
    """Column ``epoch - 1`` of the trajectories the training pass fills: each sample's
    loss (and logits) as it was seen, and the data parameters' sigmas after the epoch."""
    traj["train_loss"][:, epoch - 1] = seen_loss.cpu()
    if seen_logits is not None:
        traj["logits"][:, epoch - 1] = seen_logits.cpu()
    if "instance_sigma" in traj:
        traj["instance_sigma"][:, epoch - 1] = torch.from_numpy(dp.instance_sigma())
    if "class_sigma" in traj:
        traj["class_sigma"][:, epoch - 1] = torch.from_numpy(dp.class_sigma())


def _evaluate(model, eval_sets, traj, epoch, batch_size):
    """``<name>_accuracy`` (percent) of every eval set after ``epoch``; the logits of the
    sets that keep them go into ``traj``."""
    metrics = {}
    for name, (ex, ey) in eval_sets.items():
        logits = predict(model, ex, batch_size=batch_size)
        metrics[f"{name}_accuracy"] = 100 * accuracy(logits, ey)
        if f"{name}_logits" in traj:
            traj[f"{name}_logits"][:, epoch - 1] = logits.float().cpu()
    return metrics


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
