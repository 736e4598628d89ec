"""Stage 2 of the in-class imbalance benchmark: retrain with fewer hard (or easy) samples.

Takes the hard/easy decision of the matching ``identify`` trial, splits hard and easy
samples separately into train and test by ``train_ratio``, keeps only a
``remaining_train_ratio`` share of the easy training samples (or of the hard ones, with
``reduce_hard``), retrains ``models_per_cell`` SimpleNNs full-batch and measures accuracy
on the full, hard and easy test sets. Accuracy is against the observed (possibly noisy)
labels, as the benchmark defines it; the ``*_clean`` metrics use the true labels.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from raydiff.data import INIT_STREAM, SPLIT_STREAM, derived_seed, rng_for
from raydiff.data.splits import config_tensors
from raydiff.engine import accuracy, predict, train
from raydiff.engine.packed import Pack, predict_packed, train_packed
from raydiff.experiments import _packs
from raydiff.experiments.config import Common, ConfigError, at_least, choice, ratio
from raydiff.models import MODELS, get_model

NAME = "imbalance"
CONSUMES = ("identify",)


@dataclass
class Config(Common):
    train_ratio: float = ratio(0.9)
    remaining_train_ratio: float = ratio(1.0)
    reduce_hard: bool = False
    models_per_cell: int = at_least(3, 1)
    model: str = choice("simple_nn", lambda: sorted(MODELS))
    hidden: list[int] = field(default_factory=lambda: [20, 20])
    epochs: int = at_least(500, 1)
    lr: float = 0.1
    subset_size: int | None = at_least(20000, 10)

    SMOKE = {"epochs": 30, "models_per_cell": 2}

    def check(self, where):
        if self.train_ratio == 0:
            raise ConfigError(f"{where}: train_ratio=0 leaves nothing to train on; use (0, 1]")


def split_hard_easy(hard, *, train_ratio, remaining_ratio, reduce_hard, rng):
    """Positions of the training set and of the hard and easy test sets.

    Hard and easy samples are shuffled separately; the first ``int(n * train_ratio)`` of
    each go to training. Then only ``int(n_train_hard * r)`` hard training samples are
    kept (``reduce_hard``) or ``int(n_train_easy * r)`` easy ones (otherwise).
    """
    hard_idx = rng.permutation(np.flatnonzero(hard))
    easy_idx = rng.permutation(np.flatnonzero(~hard))
    n_hard, n_easy = int(len(hard_idx) * train_ratio), int(len(easy_idx) * train_ratio)
    train_hard, test_hard = hard_idx[:n_hard], hard_idx[n_hard:]
    train_easy, test_easy = easy_idx[:n_easy], easy_idx[n_easy:]
    if reduce_hard:
        train_hard = train_hard[:int(len(train_hard) * remaining_ratio)]
    else:
        train_easy = train_easy[:int(len(train_easy) * remaining_ratio)]
    return np.concatenate([train_hard, train_easy]), test_hard, test_easy


def run(config, report, data):
    tensors, hard, train_idx, tests, true = _cell(config, report, data)
    train_set = tensors.take(train_idx)
    device = report.device
    logits, losses = [], []
    for m in range(config.models_per_cell):
        model = get_model(config.model, input_shape=tensors.x.shape[1:],
                          num_classes=tensors.num_classes, hidden=config.hidden,
                          seed=_model_seed(config, m)).to(device)
        if len(train_set):
            result = train(model, train_set.x, train_set.y, epochs=config.epochs, lr=config.lr)
            losses.append(result.losses[-1])
        logits.append(predict(model, tensors.x))
    return _score(config, report, tensors, hard, train_idx, tests, true, logits, losses)


def _model_seed(config, m):
    return derived_seed(config.seed, INIT_STREAM, 1000 + m)


def _cell(config, report, data):
    """The subset with identify's observed labels, its hard mask, the training positions
    and the test sets {full, hard, easy} of this cell, and the true labels (device)."""
    device = report.device
    upstream = report.upstream("identify").table("per_sample.parquet")
    tensors = config_tensors(config, device, data)     # identify's hard images, if any
    if not np.array_equal(upstream["sample_id"].to_numpy(), tensors.sample_id):
        raise ValueError("the identify stage scored a different subset of the data "
                         "(dataset/subset_size/subset_seed differ); align them in the sweep")
    tensors.y = torch.tensor(upstream["observed_label"].to_numpy(), device=device)
    if upstream["hard"].isna().any():
        # a class that never inverted has no straggler count: no honest hard / easy split
        undecided = sorted(set(upstream.loc[upstream["hard"].isna(), "observed_label"].tolist()))
        raise ValueError(
            f"the identify trial left {int(upstream['hard'].isna().sum())} samples undecided "
            f"(observed classes {undecided}: a class never inverted, see its "
            f"raydiff.never_inverted tag); raise the identify stage's epochs or max_retries")
    hard = upstream["hard"].to_numpy(dtype=bool)
    train_idx, test_hard, test_easy = split_hard_easy(
        hard, train_ratio=config.train_ratio, remaining_ratio=config.remaining_train_ratio,
        reduce_hard=config.reduce_hard, rng=rng_for(config.seed, SPLIT_STREAM))
    tests = {"full": np.concatenate([test_hard, test_easy]), "hard": test_hard, "easy": test_easy}
    report.trains_on(tensors.sample_id[train_idx], upstream["observed_label"].to_numpy()[train_idx],
                     upstream["is_noisy"].to_numpy(dtype=bool)[train_idx])
    true = torch.as_tensor(tensors.label, device=device)
    return tensors, hard, train_idx, tests, true


def _score(config, report, tensors, hard, train_idx, tests, true, all_logits, losses):
    """Accuracies of every model of the cell (``all_logits``: its (N, C) logits over the
    subset; ``losses``: each model's last training loss, empty when nothing trained)."""
    device = true.device
    rows = []
    for m, logits in enumerate(all_logits):
        if losses:
            report({f"loss_model{m}": losses[m]}, step=m)
        row = {"model": m}
        for name, idx in tests.items():
            t = torch.as_tensor(idx, device=device, dtype=torch.long)
            row[f"acc_{name}"] = 100 * accuracy(logits[t], tensors.y[t])
            row[f"acc_{name}_clean"] = 100 * accuracy(logits[t], true[t])
        rows.append(row)
    table = pd.DataFrame(rows)
    report.table("models.parquet", table)

    metrics = {"n_train": len(train_idx), "n_train_hard": int(hard[train_idx].sum()),
               "n_test_hard": len(tests["hard"]), "n_test_easy": len(tests["easy"])}
    for column in table.columns.drop("model"):
        metrics[f"{column}_mean"] = float(table[column].mean())
        metrics[f"{column}_std"] = float(table[column].std(ddof=0))
    report(metrics)
    return metrics


# -- packs (raydiff.experiments._packs has the contract) --------------------------------

# seed and rate; identify's labels and hard set come per config from its own upstream
# run. The split keys (train_ratio, remaining_train_ratio, reduce_hard) stay out: a pack
# of one split trains subsets of one size, which the engine gathers (a hard-only cell
# costs its own rows, not N masked ones)
PACK_KEYS = ("seed", "noise_ratio", "noise_kind", "models_per_cell", "lr")


def packable(config):
    return _packs.value(config, "model") == "simple_nn"


def PACK_MODELS(config):
    return int(_packs.value(config, "models_per_cell", 1))


def run_pack(configs, reports, data):
    """:func:`run` for many cells: the ``models_per_cell`` models of every cell in one
    pack, each on its cell's training positions (a per-model subset) with its cell's
    observed labels. Not checkpointed (imbalance has no ``checkpoint_every``; its
    trainings are short full-batch runs): a restarted pack trains again from epoch 0."""
    outcomes = [None] * len(configs)
    ok, rest = _packs.split(configs, packable)
    for i in rest:
        outcomes[i] = _packs.alone(run, configs[i], reports[i], data)
    cells, owners, seeds, labels, subsets, lrs = {}, [], [], [], [], []
    for i in ok:
        cell = _packs.guarded(_cell, configs[i], reports[i], data)
        if isinstance(cell, Exception):
            outcomes[i] = cell
            continue
        tensors, _, train_idx, _, _ = cell
        lead = next(iter(cells.values()))[0] if cells else None
        _packs.share_inputs(tensors, lead)
        if lead is not None and tensors.x is not lead.x:     # other images (an image kind)
            outcomes[i] = _packs.alone(run, configs[i], reports[i], data)
            continue
        cells[i] = cell
        for m in range(configs[i].models_per_cell):
            owners.append((i, m))
            seeds.append(_model_seed(configs[i], m))
            labels.append(tensors.y)
            subsets.append(train_idx)
            lrs.append(configs[i].lr)
    if not owners:
        return outcomes
    first = configs[owners[0][0]]
    x = cells[owners[0][0]][0].x
    pack = Pack.init(seeds, input_shape=x.shape[1:], num_classes=cells[owners[0][0]][0].num_classes,
                     hidden=first.hidden, device=x.device)
    # a cell with no training sample trains nothing (its models stay at their init)
    trains = [j for j, s in enumerate(subsets) if len(s)]
    losses = np.full((len(owners),), np.nan)
    diverged = {}
    if trains:
        sub = pack.select(trains) if len(trains) < len(owners) else pack
        result = train_packed(sub, x, torch.stack([labels[j] for j in trains]),
                              epochs=first.epochs, lr=[lrs[j] for j in trains],
                              subsets=[subsets[j] for j in trains])
        for t, j in enumerate(trains):
            losses[j] = result.losses[-1, t]
            if t in result.diverged:
                diverged[j] = result.diverged[t]
        if sub is not pack:
            for layer, (w, b) in enumerate(zip(sub.weights, sub.biases)):
                idx = torch.as_tensor(trains, device=x.device)
                pack.weights[layer].index_copy_(0, idx, w)
                pack.biases[layer].index_copy_(0, idx, b)
    logits = predict_packed(pack, x)
    for i in cells:
        js = [j for j, (owner, _) in enumerate(owners) if owner == i]
        bad = [diverged[j] for j in js if j in diverged]
        if bad:
            outcomes[i] = _packs.diverged_error(min(bad))
            continue
        tensors, hard, train_idx, tests, true = cells[i]
        trained = len(train_idx) > 0
        outcomes[i] = _packs.guarded(_score, configs[i], reports[i], tensors, hard, train_idx,
                                     tests, true, [logits[j] for j in js],
                                     [float(losses[j]) for j in js] if trained else [])
    return outcomes
