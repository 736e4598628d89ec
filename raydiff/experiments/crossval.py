"""One fold of k-fold cross-validation: out-of-fold predicted probabilities.

The (noisy) subset is split into ``folds`` parts, stratified by the observed label and
seeded by ``seed``, so every fold trial of one setting sees the same split. Trial ``fold``
trains on the other parts and predicts class probabilities for its own part, which it
never saw: the input confident learning needs. A ``confident_learning`` stage gathers
the ``folds`` trials of a setting (``after: crossval``) into one out-of-fold matrix.

The probabilities come from the epoch ``oof_epoch`` picks:

- ``best_clean`` (the default): the first epoch with the best accuracy on a clean
  validation part, ``clean_val_fraction`` of the fold's training part (stratified by the
  observed label, seeded by seed and fold), held out of training and judged by its *true*
  labels. A fold model trained to the end memorises its noisy labels, and its confident,
  over-fit predictions on the held-out part hide the very label errors confident learning
  looks for, so an early epoch is wanted; choosing it on noisy labels (``best``) rewards the
  epochs that have learnt a structured flip (pair noise: class c -> one other class),
  exactly the errors to be found. The clean part is a small trusted set, as a benchmark
  may assume; the samples confident learning scores are never judged by their true labels.
- ``best``: the first epoch with the best held-out accuracy on the *observed* (noisy)
  labels of the fold's own held-out part, cleanlab's cross-validation recipe (each fold's
  best checkpoint).
- ``final``: the last epoch.

Every mode predicts every sample of the fold's held-out part, so the folds still cover
the subset once; only ``best_clean`` trains on less (the clean part is left out).

Artifacts: ``oof.parquet`` (sample_id, label, observed_label, is_noisy, fold and one
column ``p_<c>`` per class) and ``crossval.json`` (fold, folds, the epoch predicted from
as ``oof_epoch``, seconds spent); metric ``oof_epoch`` too, and per epoch
``heldout_accuracy`` (observed labels) and, with ``best_clean``, ``clean_val_accuracy``.
"""

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from raydiff.data import BATCH_STREAM, INIT_STREAM, SPLIT_STREAM, derived_seed
from raydiff.data.splits import config_tensors, fold_assignment
from raydiff.engine.packed import Pack, predict_packed
from raydiff.engine.supervised import fit
from raydiff.experiments import _packs
from raydiff.experiments.common import TrainConfig
from raydiff.experiments.config import ConfigError, at_least, choice, ratio

NAME = "crossval"
# how the epoch to predict from is chosen (the module docstring says why best_clean)
OOF_EPOCHS = {"best_clean": "clean_val", "best": "heldout", "final": None}


@dataclass
class Config(TrainConfig):
    folds: int = at_least(5, 2)
    fold: int = at_least(0, 0)
    oof_epoch: str = choice("best_clean", list(OOF_EPOCHS))
    clean_val_fraction: float = ratio(0.1)     # of the training part, best_clean's judge

    def check(self, where):
        if self.fold >= self.folds:
            raise ConfigError(f"{where}: fold={self.fold} must be < folds={self.folds} "
                              f"(folds are numbered 0..folds-1)")
        if self.oof_epoch == "best_clean" and not 0 < self.clean_val_fraction < 1:
            raise ConfigError(f"{where}: oof_epoch=best_clean needs clean_val_fraction in "
                              f"(0, 1), got {self.clean_val_fraction}; set e.g. "
                              f"clean_val_fraction: 0.1, or oof_epoch: best / final")


def fold_parts(config, observed, fold):
    """Positions (sorted int arrays) of the fold's training, clean-validation and held-out
    parts of the subset, from its fold assignment ``fold`` (N,) and observed labels (N,).

    The clean-validation part (``oof_epoch: best_clean`` only, else empty) is
    ``clean_val_fraction`` of each observed class of the training part, rounded down,
    drawn from the SPLIT stream of (seed, fold): the same in a pack as alone.
    """
    held = np.flatnonzero(fold == config.fold)
    train = np.flatnonzero(fold != config.fold)
    if config.oof_epoch != "best_clean":
        return train, np.empty(0, dtype=np.int64), held
    rng = np.random.default_rng(derived_seed(config.seed, SPLIT_STREAM, config.fold))
    val = []
    for c in np.unique(observed[train]):
        members = rng.permutation(train[observed[train] == c])
        val.append(members[:int(len(members) * config.clean_val_fraction)])
    val = np.sort(np.concatenate(val))
    return np.setdiff1d(train, val), val, held


def chosen_epoch(config, accuracy):
    """The 1-based epoch to predict from: the first maximum of ``accuracy`` (E,), the
    per-epoch accuracy of the set ``oof_epoch`` judges by, or the last epoch for
    ``final`` (or when nothing was judged)."""
    accuracy = np.asarray(accuracy, dtype=np.float64)
    if OOF_EPOCHS[config.oof_epoch] is None or not len(accuracy):
        return None
    return int(np.argmax(accuracy)) + 1


def run(config, report, data):
    started = time.monotonic()
    tensors = config_tensors(config, report.device, data)
    observed = tensors.observed_label
    fold = fold_assignment(observed, folds=config.folds, seed=config.seed)
    train_pos, val_pos, held_pos = fold_parts(config, observed, fold)
    tr, held = tensors.take(train_pos), tensors.take(held_pos)
    report.trains_on(tr.sample_id, tr.observed_label, tr.is_noisy)
    # held.y holds the observed labels: all a fold may know about its held-out part
    eval_sets = {"heldout": (held.x, held.y)}
    if len(val_pos):
        val = tensors.take(val_pos)
        eval_sets["clean_val"] = (val.x, torch.as_tensor(val.label, device=val.y.device))
    fitted = fit(config, report, tr.x, tr.y, num_classes=tensors.num_classes,
                 eval_sets=eval_sets, best_of=OOF_EPOCHS[config.oof_epoch],
                 record_eval_logits=["heldout"])
    logits = fitted.trajectories["heldout_logits"]                               # (M, E, C)
    epoch = fitted.best_epoch or logits.shape[1]
    return _score(config, report, tensors, held, len(tr), len(val_pos), logits, epoch,
                  started)


def _score(config, report, tensors, held, n_train, n_val, logits, epoch, started):
    """The out-of-fold table and metrics from the held-out ``logits`` (M, E, C) of every
    epoch, predicting from ``epoch`` (1-based)."""
    probs = torch.softmax(torch.from_numpy(logits[:, epoch - 1]).double(), dim=1).numpy()
    table = pd.DataFrame({"sample_id": held.sample_id, "label": held.label,
                          "observed_label": held.observed_label, "is_noisy": held.is_noisy,
                          "is_hard": held.is_hard, "hardness": held.hardness,
                          "fold": config.fold})
    for c in range(tensors.num_classes):
        table[f"p_{c}"] = probs[:, c]
    report.table("oof.parquet", table)
    seconds = time.monotonic() - started
    report.json("crossval.json", {"fold": config.fold, "folds": config.folds,
                                  "oof_epoch": epoch, "seconds": seconds})
    metrics = {"n_train": n_train, "n_clean_val": n_val, "n_heldout": len(held),
               "oof_epoch": epoch,
               "epochs_run": logits.shape[1],
               "heldout_true_accuracy": 100 * float((probs.argmax(1) == held.label).mean())}
    report(metrics)
    return metrics


# -- packs (raydiff.experiments._packs has the contract) --------------------------------

PACK_KEYS = ("seed", "noise_ratio", "noise_kind", "fold", "folds", "oof_epoch",
             "clean_val_fraction", "lr", "momentum", "weight_decay")


def packable(config):
    return (_packs.value(config, "model") == "simple_nn" and not _packs.value(config, "augment")
            and _packs.value(config, "optimizer", "sgd") == "sgd")


def run_pack(configs, reports, data):
    """:func:`run` for many folds / settings in one pack: model k trains on its fold's
    training part (a per-model subset, in ``run``'s order) with its setting's labels; the
    held-out predictions of every epoch come from one no-grad pass of the pack over the
    subset, each config keeping its own held-out rows. The pack checkpoints as one unit
    every ``checkpoint_every`` epochs and at the last (the held-out logits so far with it)
    and resumes from there (:func:`raydiff.experiments._packs.train_checkpointed`)."""
    started = time.monotonic()
    outcomes, ok, cfgs, device, tensors = _packs.start(
        configs, reports, data, packable=packable, run=run, prepare_one=config_tensors)
    if not ok:
        return outcomes
    first = cfgs[0]
    parts = [fold_parts(c, t.observed_label,
                        fold_assignment(t.observed_label, folds=c.folds, seed=c.seed))
             for c, t in zip(cfgs, tensors)]
    train_pos, val_pos, held_pos = (list(p) for p in zip(*parts))
    for j, i in enumerate(ok):
        t, pos = tensors[j], train_pos[j]
        reports[i].trains_on(t.sample_id[pos], t.observed_label[pos], t.is_noisy[pos])
    x = tensors[0].x
    y = torch.stack([t.y for t in tensors])
    pack = Pack.init([derived_seed(c.seed, INIT_STREAM) for c in cfgs], input_shape=x.shape[1:],
                     num_classes=tensors[0].num_classes, hidden=first.hidden, device=device)
    generators = [torch.Generator().manual_seed(derived_seed(c.seed, BATCH_STREAM)) for c in cfgs]
    rates = _packs.schedule([c.lr for c in cfgs], first.lr_milestones, first.lr_gamma)
    held_idx = [torch.as_tensor(h, device=device) for h in held_pos]
    val_idx = [torch.as_tensor(v, device=device) for v in val_pos]
    val_label = [torch.as_tensor(t.label[v], device=device) for t, v in zip(tensors, val_pos)]
    # per config: (M, C) held-out logits and the clean-validation accuracy per epoch; kept
    # with the pack's checkpoint
    kept = {"history": [[] for _ in cfgs], "clean_val": [[] for _ in cfgs]}

    def on_epoch(epoch, losses):
        logits = predict_packed(pack, x, batch_size=first.eval_batch_size)
        lr = rates(epoch)
        for j, i in enumerate(ok):
            held = logits[j].index_select(0, held_idx[j])
            kept["history"][j].append(held.float().cpu())
            metrics = {"loss": float(losses[j]), "lr": float(lr[j]), "heldout_accuracy":
                       _accuracy(held, y[j].index_select(0, held_idx[j]))}
            if len(val_pos[j]):
                metrics["clean_val_accuracy"] = _accuracy(
                    logits[j].index_select(0, val_idx[j]), val_label[j])
                kept["clean_val"][j].append(metrics["clean_val_accuracy"])
            if np.isfinite(losses[j]):
                reports[i](metrics, step=epoch)

    result = _packs.train_checkpointed(
        pack, x, y, epochs=first.last_epoch, reports=[reports[i] for i in ok],
        every=_packs.checkpoint_every(cfgs), kept=kept, batch_size=first.batch_size,
        momentum=[c.momentum for c in cfgs], weight_decay=[c.weight_decay for c in cfgs],
        generators=generators, subsets=train_pos, on_epoch=on_epoch, lr_schedule=rates)
    # each fold's seconds: its share of the pack's training, as one of len(ok) trials
    share = (time.monotonic() - started) / len(ok)
    for j, i in enumerate(ok):
        if j in result.diverged:
            outcomes[i] = _packs.diverged_error(result.diverged[j])
            continue
        outcomes[i] = _packs.guarded(_finish_fold, cfgs[j], reports[i], tensors[j], held_pos[j],
                                     len(train_pos[j]), len(val_pos[j]), kept["history"][j],
                                     kept["clean_val"][j], time.monotonic() - share)
    return outcomes


def _accuracy(logits, labels):
    """Percent of ``logits`` (M, C) whose argmax is ``labels`` (M,), as fit reports it."""
    return 100 * (logits.argmax(1) == labels).float().mean().item()


def _finish_fold(config, report, tensors, held_pos, n_train, n_val, history, clean_val,
                 started):
    logits = torch.stack(history, 1).numpy()                      # (M, E, C)
    judge = OOF_EPOCHS[config.oof_epoch]
    if judge == "heldout":
        held_y = torch.as_tensor(tensors.observed_label[held_pos])
        accuracy = [_accuracy(torch.from_numpy(logits[:, e]), held_y)
                    for e in range(logits.shape[1])]
    else:
        accuracy = clean_val if judge == "clean_val" else []
    epoch = chosen_epoch(config, accuracy) or logits.shape[1]
    return _score(config, report, tensors, tensors.take(held_pos), n_train, n_val, logits,
                  epoch, started)
