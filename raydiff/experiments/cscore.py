"""The C-score (Jiang et al. 2021): expected accuracy of a sample when it is held out,
from hundreds of SimpleNNs trained on random subsets, as packs.

For every subset ratio r of ``ratios`` and j < ``models_per_ratio``, a model trains on a
uniformly drawn subset of ``round(r * N)`` of the N (noisy) samples, without replacement,
and predicts every sample afterwards. A sample's estimate at ratio r is its 0/1 accuracy on
the *observed* label over the models of ratio r that held it out; its C-score is the mean of
those estimates over the ratios (:mod:`raydiff.scores.cscore`, which also says which
choices are the authors' and which are ours). A mislabeled sample is one the other samples
do not support: models that never saw it predict its true class, so its C-score is low.

Our choices: the authors' MNIST demo trains a 512-256 ReLU MLP for 10 epochs of SGD
(batch 128, lr 0.1, momentum 0.9) and 200 models per ratio (their defaults for
``ratios``, ``models_per_ratio``, ``epochs`` and ``batch_size`` are ours too). The models
here are SimpleNNs (tanh, ``hidden`` [20, 20]) so that they pack
(:mod:`raydiff.engine.packed`: ``models_per_pack`` models of one ratio trained as one
computation), trained mini-batch because on the CPU one mini-batch epoch over a subset
costs what one full-batch step over all N samples costs (the packed full-batch step
computes every sample, masked), and ten mini-batch epochs fit a 20-20 MLP where full batch
needs hundreds of steps; lr 0.02 (with momentum 0.9) gave held-out models about 87% clean
accuracy on 20% uniform noise against about 85% at 0.1 (measured at ratio 0.5, 32
models, batch 128, mnist5k).

Seeds: model j of ratio index i draws its subset (stream CSCORE_SUBSET), its
initialisation (INIT) and its shuffles (BATCH) from (``seed``, stream, i, j), never from
its pack, so the result does not depend on
``models_per_pack`` (up to float rounding of the stacked products). The label noise is
the usual NOISE stream of ``seed``: every model sees the same noisy labels.

Artifacts: ``per_sample.parquet`` with ``score`` = 1 - C-score (higher = harder) and a
``score_<name>`` column for every registered score of the ``holdout`` input,
``cscore``, ``cscore_soft`` (the same average of the held-out softmax probability of the
observed label: not the authors' estimator), one ``cscore_r<ratio>`` column per ratio and
``held_out_min`` (the fewest models of any ratio that held the sample out); ``hard`` = the
``top_k(N, noise_ratio)`` highest scores (null without noise); ``cscore_by_ratio.png``.
Metrics: ``models_trained``, ``train_seconds``, ``seconds``, ``held_out_min``, mean
held-out accuracy per ratio, and with noise ``noise_auroc``, ``noise_ap``,
``noise_precision_at_k`` (and ``noise_auroc_soft``).

Checkpoints: the trial checkpoints after each pack it finishes (the predictions of every
model trained so far and how many packs are done), so a killed trial resumes at the first
pack it had not finished (tagged ``raydiff.resumed_from_pack``) and ends with what an
uninterrupted one ends with; the pack it was killed in trains again from its start (one
pack is ten short mini-batch epochs). Not done: lr milestones (``lr_milestones`` is not a
key here).
"""

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from raydiff.data import BATCH_STREAM, INIT_STREAM, derived_seed
from raydiff.data.splits import config_tensors
from raydiff.data.streams import CSCORE_SUBSET_STREAM
from raydiff import plots
from raydiff.engine.packed import Pack, predict_packed, train_packed
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.config import Common, ConfigError, at_least, choice
from raydiff.scores import auroc, compute_all, cscore_per_ratio, detection, top_k_mask

NAME = "cscore"


@dataclass
class Config(Common):
    ratios: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
                                                         0.7, 0.8, 0.9])
    models_per_ratio: int = at_least(200, 1)
    models_per_pack: int = at_least(128, 1)        # memory bound; not the science
    model: str = choice("simple_nn", ["simple_nn"])  # packs stack SimpleNNs only
    hidden: list[int] = field(default_factory=lambda: [20, 20])
    epochs: int = at_least(10, 1)
    batch_size: int | None = at_least(128, 1)      # None: full batch over the subset
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 0.0
    normalize: str = choice("scalar", ["scalar", "minus_one_one", "none"])
    eval_batch_size: int = at_least(8192, 1)

    SMOKE = {"models_per_ratio": 6, "epochs": 5}

    def check(self, where):
        if not self.ratios:
            raise ConfigError(f"{where}: ratios is empty; give subset ratios in (0, 1)")
        for r in self.ratios:
            if not 0.0 < r < 1.0:
                raise ConfigError(f"{where}: ratios holds {r!r}, outside (0, 1): a model "
                                  f"must train on some samples and hold some out")
        if len(set(self.ratios)) != len(self.ratios):
            raise ConfigError(f"{where}: ratios {self.ratios} repeats a ratio")


def model_plan(config, n):
    """Every model as (ratio index, model index j, ratio, subset indices (sorted))."""
    plan = []
    for i, r in enumerate(config.ratios):
        size = int(round(r * n))
        if not 0 < size < n:
            raise ConfigError(f"ratios: {r} of {n} samples is {size} samples; every "
                              f"ratio must train on at least one sample and hold one out")
        for j in range(config.models_per_ratio):
            rng = np.random.default_rng([int(config.seed), CSCORE_SUBSET_STREAM, i, j])
            plan.append((i, j, float(r), np.sort(rng.choice(n, size=size, replace=False))))
    return plan


def train_models(config, tensors, plan, *, on_pack=None, resume=None):
    """Train the models of ``plan`` in packs of ``models_per_pack`` (one ratio per pack, so
    no pack pads short subsets) and return (correct (M, N) bool, prob (M, N) float32:
    softmax probability of the observed label), rows in ``plan`` order.

    on_pack : callable(done, total, correct, prob), optional, after each pack (the arrays
        filled up to that pack's models)
    resume : (packs done, correct, prob) of an earlier call of the same plan, optional: the
        first ``packs done`` packs are not trained again
    """
    n = len(tensors)
    correct = np.zeros((len(plan), n), dtype=bool)
    prob = np.zeros((len(plan), n), dtype=np.float32)
    skip = 0
    if resume is not None:
        skip, correct[:], prob[:] = resume
    y = tensors.y
    rows = list(range(len(plan)))
    packs = []
    for i in sorted({p[0] for p in plan}):
        members = [m for m in rows if plan[m][0] == i]
        packs += [members[a:a + config.models_per_pack]
                  for a in range(0, len(members), config.models_per_pack)]
    for done, members in enumerate(packs):
        if done < skip:
            continue
        seeds = [derived_seed(config.seed, INIT_STREAM, plan[m][0], plan[m][1]) for m in members]
        pack = Pack.init(seeds, input_shape=tensors.x.shape[1:],
                         num_classes=tensors.num_classes, hidden=config.hidden,
                         device=tensors.x.device)
        generators = [torch.Generator().manual_seed(
            derived_seed(config.seed, BATCH_STREAM, plan[m][0], plan[m][1])) for m in members]
        result = train_packed(pack, tensors.x, y, epochs=config.epochs, lr=config.lr,
                              momentum=config.momentum, weight_decay=config.weight_decay,
                              batch_size=config.batch_size, generators=generators,
                              subsets=[torch.as_tensor(plan[m][3]) for m in members])
        if result.diverged:
            bad = [plan[members[k]][:2] for k in result.diverged]
            raise RuntimeError(f"{len(bad)} C-score models diverged (ratio index, model): "
                               f"{bad[:5]}; lower lr")
        logits = predict_packed(pack, tensors.x, batch_size=config.eval_batch_size)
        correct[members] = (logits.argmax(2) == y[None]).cpu().numpy()
        p = torch.softmax(logits.float(), 2).gather(2, y[None, :, None].expand(len(members), n, 1))
        prob[members] = p[..., 0].cpu().numpy()
        if on_pack is not None:
            on_pack(done + 1, len(packs), correct, prob)
    return correct, prob


def _resume(report, shape):
    """(packs done, correct, prob) of the trial's last checkpoint, or None (none, or one
    of another plan: then every pack trains)."""
    state = report.resume_state
    if state is None:
        return None
    if list(state.get("shape", [])) != list(shape):
        report.tag("raydiff.checkpoint_error", f"checkpoint of {state.get('shape')} models x "
                   f"samples, this plan has {list(shape)}: restarting from scratch")
        return None
    report.tag("raydiff.resumed_from_pack", int(state["packs_done"]))
    return (int(state["packs_done"]), state["correct"].numpy().astype(bool),
            state["prob"].numpy().astype(np.float32))


def run(config, report, data):
    started = time.monotonic()
    tensors = config_tensors(config, report.device, data)
    n = len(tensors)
    plan = model_plan(config, n)
    trained = time.monotonic()

    def on_pack(done, total, correct, prob):
        report({"packs_done": done, "packs": total}, step=done, checkpoint={
            "packs_done": done, "shape": [len(plan), n],
            "correct": torch.from_numpy(correct.copy()), "prob": torch.from_numpy(prob.copy())})

    correct, prob = train_models(config, tensors, plan, on_pack=on_pack,
                                 resume=_resume(report, (len(plan), n)))
    train_seconds = time.monotonic() - trained

    held_out = np.ones((len(plan), n), dtype=bool)
    for m, (_, _, _, subset) in enumerate(plan):
        held_out[m, subset] = False
    ratios = np.array([p[2] for p in plan])
    levels, per_ratio = cscore_per_ratio(held_out, correct, ratios)
    _, per_ratio_soft = cscore_per_ratio(held_out, prob, ratios)
    counts = np.stack([held_out[ratios == r].sum(0) for r in levels])     # (R, N)
    if (counts == 0).all(0).any():
        raise ValueError(f"{int((counts == 0).all(0).sum())} samples were never held out "
                         f"at any ratio: raise models_per_ratio "
                         f"(now {config.models_per_ratio})")
    # 1 - the mean over the ratios where the sample was held out (all, in practice)
    scores = compute_all("holdout", (held_out, correct, ratios), tensors.observed_label)
    score = scores["cscore"]
    c = 1.0 - score
    c_soft = np.nanmean(per_ratio_soft, 0)

    noisy = tensors.is_noisy
    hard = top_k_mask(score, config.noise_ratio)        # None (no decision) without noise
    extra = {"cscore": c, "cscore_soft": c_soft, "held_out_min": counts.min(0)}
    for r, row in zip(levels, per_ratio):
        extra[f"cscore_r{r:g}"] = row
    report.table("per_sample.parquet", per_sample_table(
        sample_id=tensors.sample_id, label=tensors.label,
        observed_label=tensors.observed_label,
        **tensors.ground_truth(), split="train", hard=hard, score=score, **extra,
        **{f"score_{k}": v for k, v in scores.items()}))
    report.figure("cscore_by_ratio.png", plots.cscore_by_ratio(levels, per_ratio, noisy))

    metrics = {"models_trained": len(plan), "train_seconds": train_seconds,
               "held_out_min": int(counts.min()),
               "mean_cscore": float(c.mean())}
    for r, row in zip(levels, per_ratio):
        # the models' mean accuracy on the samples they did not see, at this ratio
        metrics[f"heldout_accuracy_r{r:g}"] = float(np.nanmean(row))
    if noisy.any() and not noisy.all():
        found = detection(score, noisy, config.noise_ratio)
        metrics.update({"noise_auroc": found["auroc"], "noise_ap": found["ap"],
                        "noise_precision_at_k": found["precision_at_k"],
                        "noise_auroc_soft": auroc(1.0 - c_soft, noisy)})
    metrics["seconds"] = time.monotonic() - started
    report(metrics)
    return metrics
