"""One fold of k-fold cross-validation: out-of-fold predicted probabilities.

The (noisy) subset is split into ``folds`` parts, stratified by the observed label and
seeded by ``seed``, so every fold trial of one setting sees the same split. Trial ``fold``
trains on the other parts and predicts class probabilities for its own part, which it
never saw: the input confident learning needs. A ``confident_learning`` stage gathers
the ``folds`` trials of a setting (``after: crossval``) into one out-of-fold matrix.

The probabilities come from the epoch with the best held-out accuracy on the *observed*
(noisy) labels (``oof_epoch: best``, the first such epoch), as cleanlab's own
cross-validation recipe loads each fold's best checkpoint: a fold model trained to the end
memorises its noisy labels, and its confident, over-fit predictions on the held-out part
hide the very label errors confident learning looks for. ``oof_epoch: final`` takes the
last epoch instead (the earlier behaviour). Only the held-out labels the trial may see
(the noisy ones) choose the epoch, never the true ones.

Artifacts: ``oof.parquet`` (sample_id, label, observed_label, is_noisy, fold and one
column ``p_<c>`` per class) and ``crossval.json`` (fold, folds, the epoch predicted from
as ``oof_epoch``, seconds spent); metric ``oof_epoch`` too.
"""

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from raydiff.data import BATCH_STREAM, INIT_STREAM, derived_seed
from raydiff.data.splits import config_tensors, fold_assignment
from raydiff.engine.packed import Pack, predict_packed
from raydiff.engine.supervised import fit
from raydiff.experiments import _packs
from raydiff.experiments.common import TrainConfig
from raydiff.experiments.config import ConfigError, at_least, choice

NAME = "crossval"


@dataclass
class Config(TrainConfig):
    folds: int = at_least(5, 2)
    fold: int = at_least(0, 0)
    oof_epoch: str = choice("best", ["best", "final"])   # best held-out (noisy) accuracy

    def check(self, where):
        if self.fold >= self.folds:
            raise ConfigError(f"{where}: fold={self.fold} must be < folds={self.folds} "
                              f"(folds are numbered 0..folds-1)")


def run(config, report, data):
    started = time.monotonic()
    tensors = config_tensors(config, report.device, data)
    observed = tensors.observed_label
    fold = fold_assignment(observed, folds=config.folds, seed=config.seed)
    tr = tensors.take(np.flatnonzero(fold != config.fold))
    held = tensors.take(np.flatnonzero(fold == config.fold))
    report.trains_on(tr.sample_id, tr.observed_label, tr.is_noisy)
    # held.y holds the observed labels: all a fold may know about its held-out part
    fitted = fit(config, report, tr.x, tr.y, num_classes=tensors.num_classes,
                 eval_sets={"heldout": (held.x, held.y)}, best_of="heldout",
                 record_eval_logits=["heldout"])
    best = fitted.best_epoch
    logits = fitted.trajectories["heldout_logits"]                               # (M, E, C)
    epoch = best if config.oof_epoch == "best" and best else logits.shape[1]
    return _score(config, report, tensors, held, len(tr), logits, epoch, started)



def _score(config, report, tensors, held, n_train, logits, epoch, started):
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
    metrics = {"n_train": n_train, "n_heldout": len(held), "oof_epoch": epoch,
               "epochs_run": logits.shape[1],
               "heldout_true_accuracy": 100 * float((probs.argmax(1) == held.label).mean())}
    report(metrics)
    return metrics


# -- packs (raydiff.experiments._packs has the contract) --------------------------------

PACK_KEYS = ("seed", "noise_ratio", "noise_kind", "fold", "folds", "oof_epoch", "lr",
             "momentum", "weight_decay")


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
    folds = [fold_assignment(t.observed_label, folds=c.folds, seed=c.seed)
             for c, t in zip(cfgs, tensors)]
    train_pos = [np.flatnonzero(f != c.fold) for f, c in zip(folds, cfgs)]
    held_pos = [np.flatnonzero(f == c.fold) for f, c in zip(folds, cfgs)]
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
    # per config: (M, C) held-out logits per epoch; kept with the pack's checkpoint
    kept = {"history": [[] for _ in cfgs]}

    def on_epoch(epoch, losses):
        logits = predict_packed(pack, x, batch_size=first.eval_batch_size)
        lr = rates(epoch)
        for j, i in enumerate(ok):
            held = logits[j].index_select(0, held_idx[j])
            kept["history"][j].append(held.float().cpu())
            if np.isfinite(losses[j]):
                acc = 100 * (held.argmax(1) == y[j].index_select(0, held_idx[j])).float().mean().item()
                reports[i]({"loss": float(losses[j]), "lr": float(lr[j]),
                            "heldout_accuracy": acc}, step=epoch)

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
                                     len(train_pos[j]), kept["history"][j],
                                     time.monotonic() - share)
    return outcomes


def _finish_fold(config, report, tensors, held_pos, n_train, history, started):
    logits = torch.stack(history, 1).numpy()                      # (M, E, C)
    held_y = torch.as_tensor(tensors.observed_label[held_pos])
    best, best_acc = None, -1.0
    for e in range(logits.shape[1]):     # the first epoch at the best held-out accuracy
        acc = 100 * (torch.from_numpy(logits[:, e]).argmax(1) == held_y).float().mean().item()
        if acc > best_acc:
            best, best_acc = e + 1, acc
    epoch = best if config.oof_epoch == "best" and best else logits.shape[1]
    return _score(config, report, tensors, tensors.take(held_pos), n_train, logits, epoch,
                  started)
