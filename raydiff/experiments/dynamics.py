"""Training-dynamics scores: one training run, every peer method that reads its dynamics.

One model trains on the whole (noisy) subset while the logits every sample gets in its
training pass are kept each epoch; from that trajectory alone come Dataset Cartography
(confidence, variability, correctness), Data-IQ (its hard region and its aleatoric
uncertainty), the large-loss criterion, the Area Under the Margin, forgetting events,
EL2N and GraNd (:mod:`raydiff.scores.dynamics`): every score the registry holds for the
inputs ``trajectory``, ``early_logits`` and ``grad_norms``.

AUM averages the margins up to the first learning-rate milestone only (every epoch when
``lr_milestones`` is empty), the authors' recipe: they compute AUM without learning-rate
drops, after which the network memorises the noisy labels (metric ``aum_epochs``).

EL2N is the error of an eval-mode, no-grad pass over every training sample after epoch
``el2n_epoch``, averaged over ``el2n_runs`` models: this run plus ``el2n_runs - 1`` more,
initialised from other seeds and trained only up to that epoch (the only extra training,
and a short one). GraNd reads the same models at the same epoch: the norm of each
sample's loss gradient with respect to every parameter, averaged over the runs.

``per_sample.parquet`` holds every score as ``score_<method>`` (``score`` itself is the one
named by ``method``) and the raw Cartography statistics ``carto_confidence``,
``carto_variability`` and ``carto_correctness`` for the data map. The trajectory goes
beside it as ``dynamics_logits.npy`` (E, N, C) float16.
"""

from dataclasses import dataclass

import numpy as np
import torch

from raydiff.data import BATCH_STREAM, INIT_STREAM, derived_seed
from raydiff.data.splits import config_tensors
from raydiff.engine import crop_flip, predict, train
from raydiff.engine.packed import Pack, predict_packed, train_packed
from raydiff.engine.grad_norm import per_sample_grad_norms
from raydiff.engine.supervised import fit, make_model, schedule, train_options
from raydiff import plots
from raydiff.experiments import _packs
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.common import TrainConfig
from raydiff.experiments.config import at_least, choice
from raydiff.scores import compute_all, scores_for
from raydiff.scores.dynamics import aum, cartography
from raydiff.scores.metrics import detection, top_k_mask

NAME = "dynamics"
# the registry's inputs this experiment produces; it computes every score of each
INPUTS = ("trajectory", "early_logits", "grad_norms")
METHODS = sorted(name for needs in INPUTS for name in scores_for(needs))


@dataclass
class Config(TrainConfig):
    method: str = choice("aum", METHODS)          # the score in the `score` column
    el2n_epoch: int = at_least(10, 1)             # clipped to the run's last epoch
    el2n_runs: int = at_least(3, 1)

    SMOKE = {"el2n_epoch": 1, "el2n_runs": 2}


def early_logits(config, tensors, *, run, epoch):
    """(N, C) eval-mode logits and (N,) per-sample loss-gradient norms of every sample
    after ``epoch`` epochs of an extra model, initialised and shuffled by stream ``run``
    of the seed, trained with the same settings as the main run."""
    model = make_model(config, tensors.x.shape[1:], tensors.num_classes,
                       run=run).to(tensors.x.device)
    generator = torch.Generator().manual_seed(derived_seed(config.seed, BATCH_STREAM, run))
    train(model, tensors.x, tensors.y, epochs=epoch, **train_options(config, model),
          batch_size=config.batch_size, generator=generator,
          augment=crop_flip if config.augment else None, lr_schedule=schedule(config))
    return (predict(model, tensors.x, batch_size=config.eval_batch_size).float().cpu().numpy(),
            per_sample_grad_norms(model, tensors.x, tensors.y))


def aum_epochs(config, epochs_run):
    """Epochs AUM averages: up to the first learning-rate milestone, else all of them."""
    # a milestone 0 drops the rate before the first epoch: no high-rate phase to keep apart
    return min([epochs_run, *(m for m in config.lr_milestones if m >= 1)])


def dynamics_scores(logits, labels, *, early, norms, aum_until=None):
    """``{method: (N,) score}``: every registered score of the trajectory ``logits``
    (E, N, C), of the early eval-mode logits of every EL2N run ``early`` (R, N, C) and of
    their per-sample gradient norms ``norms`` (R, N); AUM averages the first
    ``aum_until`` epochs (None: all)."""
    scores = compute_all("trajectory", logits, labels)
    scores["aum"] = aum(logits, labels=labels, until=aum_until)   # the authors' averaging window
    scores.update(compute_all("early_logits", early, labels))
    scores.update(compute_all("grad_norms", norms, labels))
    return scores


def run(config, report, data):
    tensors = config_tensors(config, report.device, data)
    epoch = min(config.el2n_epoch, config.last_epoch)
    traj = fit(config, report, tensors.x, tensors.y, num_classes=tensors.num_classes,
               eval_sets={}, record_logits=True, eval_logits_at=[epoch],
               grad_norms_at=[epoch]).trajectories
    logits = np.moveaxis(traj["logits"], 1, 0)                       # (E, N, C)
    extra = [early_logits(config, tensors, run=r, epoch=epoch)
             for r in range(1, config.el2n_runs)]
    early = [traj["eval_logits"][:, 0]] + [e for e, _ in extra]
    norms = [traj["grad_norms"][:, 0]] + [g for _, g in extra]
    return _score(config, report, tensors, logits, early, norms, epoch)



def _score(config, report, tensors, logits, early, norms, epoch):
    """Every score from the trajectory ``logits`` (E, N, C), the EL2N runs' eval-mode
    logits ``early`` (list of (N, C)) and gradient norms ``norms`` (list of (N,)) after
    ``epoch``; the table, figure and metrics."""
    observed = tensors.observed_label
    until = aum_epochs(config, len(logits))
    scores = dynamics_scores(logits, observed, early=np.stack(early), norms=np.stack(norms),
                             aum_until=until)
    carto = cartography(logits, labels=observed)

    score = scores[config.method]
    hard = top_k_mask(score, config.noise_ratio)
    report.table("per_sample.parquet", per_sample_table(
        sample_id=tensors.sample_id, label=tensors.label, observed_label=observed,
        **tensors.ground_truth(),
        split="train", hard=hard, score=score,
        **{f"carto_{k}": v for k, v in carto.items()},
        **{f"score_{k}": v for k, v in scores.items()}))
    report.array("dynamics_logits.npy", logits.astype(np.float16))
    report.figure("data_map.png", plots.data_map(carto["variability"], carto["confidence"],
                                                 tensors.is_noisy))

    correct = logits[-1].argmax(axis=1) == observed
    metrics = {"epochs_run": len(logits), "el2n_epoch": epoch, "aum_epochs": until,
               "train_accuracy_last_epoch": 100 * float(correct.mean())}
    noisy = tensors.is_noisy
    if noisy.any() and not noisy.all():
        for name, s in scores.items():
            for key, value in detection(s, noisy, config.noise_ratio).items():
                metrics[f"{name}_{key}"] = value
    report(metrics)
    return metrics


# -- packs (raydiff.experiments._packs has the contract) --------------------------------

PACK_KEYS = ("seed", "noise_ratio", "noise_kind", "method", "lr", "momentum", "weight_decay")


def packable(config):
    return (_packs.value(config, "model") == "simple_nn" and not _packs.value(config, "augment")
            and _packs.value(config, "optimizer", "sgd") == "sgd")


def run_pack(configs, reports, data):
    """:func:`run` for many configs: the main models in one pack (their training-pass
    logits recorded every epoch), the EL2N runs' extra models (``el2n_runs - 1`` per
    config, trained to ``el2n_epoch``) in a second."""
    outcomes, ok, cfgs, device, tensors = _packs.start(
        configs, reports, data, packable=packable, run=run, prepare_one=config_tensors)
    if not ok:
        return outcomes
    first = cfgs[0]
    x, c_out = tensors[0].x, tensors[0].num_classes
    y = torch.stack([t.y for t in tensors])
    epoch = min(first.el2n_epoch, first.last_epoch)
    rates = _packs.schedule([c.lr for c in cfgs], first.lr_milestones, first.lr_gamma)
    pack = Pack.init([derived_seed(c.seed, INIT_STREAM) for c in cfgs], input_shape=x.shape[1:],
                     num_classes=c_out, hidden=first.hidden, device=device)
    # the main models' eval-mode logits and per-sample gradient norms after ``epoch``
    kept = {"early": [], "norms": []}

    def on_epoch(e, losses):
        if e == epoch:
            kept["early"] = [predict_packed(pack, x, batch_size=first.eval_batch_size).cpu()]
            kept["norms"] = [torch.from_numpy(np.stack([
                per_sample_grad_norms(pack.model(j), x, y[j]) for j in range(len(cfgs))]))]
        lr = rates(e)
        for j, i in enumerate(ok):
            if np.isfinite(losses[j]):
                reports[i]({"loss": float(losses[j]), "lr": float(lr[j])}, step=e)

    # recorded as float16, as run's trajectory is stored (and half the checkpoint)
    result = _packs.train_checkpointed(
        pack, x, y, epochs=first.last_epoch, reports=[reports[i] for i in ok],
        every=_packs.checkpoint_every(cfgs), kept=kept, batch_size=first.batch_size,
        momentum=[c.momentum for c in cfgs], weight_decay=[c.weight_decay for c in cfgs],
        generators=[torch.Generator().manual_seed(derived_seed(c.seed, BATCH_STREAM)) for c in cfgs],
        record_every=1, record_dtype=torch.float16, on_epoch=on_epoch, lr_schedule=rates)
    early_main = kept["early"][0] if kept["early"] else None   # None: all diverged before
    norms_main = kept["norms"][0] if kept["norms"] else None
    # the EL2N runs: run r of config j seeded as early_logits seeds it
    extra = [(j, r) for j, c in enumerate(cfgs) for r in range(1, c.el2n_runs)]
    early_extra, norms_extra = None, []
    if extra:
        extra_pack = Pack.init([derived_seed(cfgs[j].seed, INIT_STREAM, r) for j, r in extra],
                               input_shape=x.shape[1:], num_classes=c_out, hidden=first.hidden,
                               device=device)
        train_packed(extra_pack, x, torch.stack([y[j] for j, _ in extra]), epochs=epoch,
                     batch_size=first.batch_size, momentum=[cfgs[j].momentum for j, _ in extra],
                     weight_decay=[cfgs[j].weight_decay for j, _ in extra],
                     generators=[torch.Generator().manual_seed(
                         derived_seed(cfgs[j].seed, BATCH_STREAM, r)) for j, r in extra],
                     lr_schedule=_packs.schedule([cfgs[j].lr for j, _ in extra],
                                                 first.lr_milestones, first.lr_gamma))
        early_extra = predict_packed(extra_pack, x, batch_size=first.eval_batch_size)
        norms_extra = [per_sample_grad_norms(extra_pack.model(t), x, y[j])
                       for t, (j, _) in enumerate(extra)]
    for j, i in enumerate(ok):
        if j in result.diverged:
            outcomes[i] = _packs.diverged_error(result.diverged[j])
            continue
        # stored as run's trajectory is: float16
        logits = result.dynamics.logits[:, j].astype(np.float16).astype(np.float32)
        early = [early_main[j].float().numpy()] + [
            early_extra[t].float().cpu().numpy() for t, (jj, _) in enumerate(extra) if jj == j]
        norms = [norms_main[j].numpy()] + [
            norms_extra[t] for t, (jj, _) in enumerate(extra) if jj == j]
        outcomes[i] = _packs.guarded(_score, cfgs[j], reports[i], tensors[j], logits, early,
                                     norms, epoch)
    return outcomes
