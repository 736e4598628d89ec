"""What the experiments' ``run_pack`` functions share: isolation, fall-back, packed fits.

The contract (used by :func:`raydiff.tune.trainable.run_pack_trial`): an experiment that
packs defines

- ``PACK_KEYS``: the config keys that may differ inside a pack (everything else, and the
  shape of the upstream, must be equal);
- ``packable(config)`` (a dict of the resolved config or a Config): whether the pack
  engine can train this config (SimpleNN, no augment, ...); the others run alone;
- ``run_pack(configs, reports, data) -> list``: one entry per config, in order: the
  config's final metrics (a dict, as ``run`` returns) or the exception it failed with.
  Each ``reports[i]`` is the config's own Report; a config must give the numbers it gives
  through ``run`` up to float rounding.

Checkpoints: a pack checkpoints as one unit. The trainable puts one
:class:`~raydiff.experiments.base.PackCheckpoint` on every member's report
(``reports[i].pack_checkpoint``, the same object; None outside a trainable that
checkpoints packs), with ``resume_state`` set when it restarts the pack from a checkpoint
saved for exactly the configs it now trains (when the set of unfinished configs changed,
e.g. some finished after the last checkpoint, those left start over from epoch 0). A
``run_pack`` that checkpoints trains through :func:`train_checkpointed` instead of
:func:`~raydiff.engine.packed.train_packed`: every ``checkpoint_every`` epochs (the
smallest of its configs', :func:`checkpoint_every`) and at the last it saves the stacked
parameters, the :class:`~raydiff.engine.packed.PackOptimizerState` (momentum buffers, live
mask, each model's shuffle generator, diverged / stopped models), the epoch, the losses
and recorded logits so far and the experiment's own ``kept`` state; given a
``resume_state`` it loads all of it into the freshly built pack and goes on from that
epoch, so the pack ends where an uninterrupted one ends (tests/test_packed.py). Resumed
members are tagged ``raydiff.resumed_from_epoch``, as single trials are.
Which stages resume mid-training: ``train_classifier``, ``crossval``, ``dynamics`` (its
main pack; the short EL2N pack after it trains again) and ``cscore`` (a single trial that
checkpoints after each of its packs). ``identify``, ``inversion`` (the inversion monitor's
snapshots and radii history) and ``imbalance`` (retrains per split) restart a pack from
epoch 0.
"""

import traceback

import numpy as np
import torch

from raydiff.data import INIT_STREAM, derived_seed
from raydiff.engine.inversion import InversionRun
from raydiff.engine.packed import (Pack, PackDynamics, PackedInversionMonitor,
                                   PackOptimizerState, PackResult, train_packed)
from raydiff.engine.train import TrainResult


class Diverged(RuntimeError):
    """A model of a pack whose loss became NaN or infinite: it was masked out."""


def value(config, key, default=None):
    return config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)


def alone(run, config, report, data):
    """``run(config, report, data)`` with its exception returned, not raised."""
    try:
        return run(config, report, data) or {}
    except Exception as exc:  # noqa: BLE001 - this config fails alone
        exc.__traceback_text__ = traceback.format_exc()
        return exc


def guarded(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or the exception it raised (one config's post-processing)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001
        return exc


def split(configs, packable):
    """(positions the pack engine takes, positions that run alone)."""
    ok = [i for i, c in enumerate(configs) if packable(c)]
    return ok, [i for i in range(len(configs)) if i not in set(ok)]


def schedule(lrs, milestones=(), gamma=0.1):
    """Per-model rates of :func:`raydiff.engine.step_schedule` (MultiStepLR) for K base
    rates ``lrs``."""
    lrs, milestones = np.asarray(lrs, dtype=np.float64), sorted(milestones)
    return lambda epoch: lrs * gamma ** sum(epoch > m for m in milestones)


def diverged_error(epoch):
    return Diverged(f"diverged: the training loss became NaN or infinite in epoch {epoch}; "
                    f"the model was masked out of its pack (lower lr?)")


def start(configs, reports, data, *, packable, run, prepare_one):
    """The opening every ``run_pack`` shares: the configs that cannot pack run alone
    (their outcomes filled in); the rest come back with their device and tensors.

    Returns (outcomes, ok, cfgs, device, tensors): ``ok`` the positions of the packable
    configs, ``cfgs`` / ``tensors`` theirs in that order (empty when none packs)."""
    outcomes = [None] * len(configs)
    ok, rest = split(configs, packable)
    for i in rest:
        outcomes[i] = alone(run, configs[i], reports[i], data)
    if not ok:
        return outcomes, ok, [], None, []
    device = reports[ok[0]].device
    tensors, kept = [], []
    for i in ok:
        t = share_inputs(prepare_one(configs[i], device, data), tensors[0] if tensors else None)
        if tensors and t.x is not tensors[0].x:
            # other inputs than the pack's (an image kind of hardness: each seed and ratio
            # has its own images); the pack trains on one x, so this config runs alone
            outcomes[i] = alone(run, configs[i], reports[i], data)
            continue
        tensors.append(t)
        kept.append(i)
    return outcomes, kept, [configs[i] for i in kept], device, tensors


def share_inputs(tensors, first):
    """``tensors`` with its inputs replaced by ``first``'s when they are equal (``first``
    None: as they are). The configs of a pack differ in labels, not inputs: one copy of x
    serves them all (64 crossval configs on mnist5k held 2.2 GiB of equal copies)."""
    if first is not None and tensors.x.shape == first.x.shape and torch.equal(tensors.x, first.x):
        tensors.x = first.x
    return tensors


def checkpoint_every(configs):
    """Epochs between a pack's checkpoints: the smallest ``checkpoint_every`` of its
    configs (0: the configs have no such key, the pack does not checkpoint)."""
    return min(int(value(c, "checkpoint_every", 0) or 0) for c in configs)


def train_checkpointed(pack, x, y, *, epochs, reports, every, generators=None, kept=None,
                       on_epoch=None, record_every=0, record_dtype=torch.float32, **kwargs):
    """:func:`~raydiff.engine.packed.train_packed` of ``pack`` to ``epochs``, saving the
    pack's checkpoint every ``every`` epochs and at the last, and resuming from the one
    the reports carry (the module docstring has the contract).

    reports : the Reports of the pack's configs (model k's at position k); the checkpoint
        is their shared ``pack_checkpoint``: without one (or with ``every`` 0) this is one
        plain ``train_packed`` call
    kept : dict, optional: the experiment's own state that must survive a restart (e.g. the
        held-out logits of every epoch so far): saved with each checkpoint, and on resume
        updated in place from it before training goes on (read it as ``kept[key]``, never
        through a reference taken before this call)
    generators, on_epoch, record_every, record_dtype, **kwargs : as ``train_packed``

    Training runs in chunks that end at the checkpoint epochs; each chunk continues the
    same :class:`PackOptimizerState`, so the chunks compute exactly what one call would.
    Returns a :class:`PackResult` over every epoch since 0 (``start_epoch``: the epoch
    resumed from), recorded logits included.
    """
    checkpoint = next((r.pack_checkpoint for r in reports
                       if r is not None and r.pack_checkpoint is not None), None)
    if checkpoint is None or not every:
        return train_packed(pack, x, y, epochs=epochs, generators=generators,
                            on_epoch=on_epoch, record_every=record_every,
                            record_dtype=record_dtype, **kwargs)
    kept = {} if kept is None else kept
    state = PackOptimizerState(pack, generators)
    start, done, losses, rec_epochs, rec_logits = 0, False, [], [], []
    saved = checkpoint.resume_state
    problem = None if saved is None else _checkpoint_mismatch(saved, pack, epochs, kept)
    if problem:
        reason = f"pack checkpoint not used, restarting from scratch: {problem}"
        print(f"raydiff: {reason}", flush=True)
        for r in reports:
            if r is not None:
                r.tag("raydiff.checkpoint_error", reason[:500])
    elif saved is not None:
        pack.load_state_dict(saved["pack"])
        state.load_state_dict(saved["optimizer"])
        start, done = int(saved["epoch"]), bool(saved["done"])
        losses = [saved["losses"].numpy()]
        rec_epochs = list(saved["record_epochs"])
        rec_logits = [t.to(record_dtype) for t in saved["record_logits"]]
        kept.update(saved["kept"])
        for r in reports:
            if r is not None:
                r.tag("raydiff.resumed_from_epoch", start)
    halted = {"all": False}

    def hook(epoch, epoch_losses):
        verdict = None if on_epoch is None else on_epoch(epoch, epoch_losses)
        halted["all"] = halted["all"] or verdict is True
        return verdict

    epoch = start
    while epoch < epochs and not done:
        end = min(epochs, (epoch // every + 1) * every)
        part = train_packed(pack, x, y, epochs=end, start_epoch=epoch, state=state,
                            generators=generators, on_epoch=hook, record_every=record_every,
                            record_dtype=record_dtype, **kwargs)
        losses.append(part.losses)
        if part.dynamics is not None and len(part.dynamics.epochs):
            rec_epochs += [int(e) for e in part.dynamics.epochs]
            # exact: the recorded values were of record_dtype before train_packed widened them
            rec_logits.append(torch.from_numpy(part.dynamics.logits).to(record_dtype))
        # stopped early (every model out, or on_epoch said stop): the run is over as it is
        done = part.epochs_run < end or halted["all"] or not bool(state.live.any())
        epoch = part.epochs_run
        checkpoint({"epoch": epoch, "done": done, "k": pack.k, "epochs": int(epochs),
                    "pack": pack.state_dict(), "optimizer": state.state_dict(),
                    "losses": torch.from_numpy(np.concatenate(losses) if losses
                                               else np.zeros((0, pack.k))),
                    "record_epochs": list(rec_epochs), "record_logits": list(rec_logits),
                    "kept": dict(kept)}, epoch=epoch)
    result = PackResult(epochs_run=epoch,
                        losses=np.concatenate(losses) if losses else np.zeros((0, pack.k)),
                        diverged=state.diverged, stopped=state.stopped, state=state,
                        start_epoch=start)
    if record_every and rec_logits:
        result.dynamics = PackDynamics(np.array(rec_epochs),
                                       torch.cat(rec_logits).float().numpy())
    return result


def _checkpoint_mismatch(saved, pack, epochs, kept):
    """Why ``saved`` cannot resume this pack (another size, architecture, length or kept
    state: a checkpoint of another setup must not half-load), or None."""
    try:
        if int(saved["k"]) != pack.k:
            return f"saved for {saved['k']} models, this pack has {pack.k}"
        shapes = [tuple(t.shape) for t in (*saved["pack"]["weights"], *saved["pack"]["biases"])]
        if shapes != [tuple(t.shape) for t in (*pack.weights, *pack.biases)]:
            return "saved for another architecture"
        if int(saved["epochs"]) != int(epochs) or int(saved["epoch"]) > int(epochs):
            return f"saved for {saved['epochs']} epochs, this pack trains {epochs}"
        if set(saved["kept"]) != set(kept):
            return f"saved state {sorted(saved['kept'])}, this run keeps {sorted(kept)}"
    except (KeyError, TypeError) as exc:
        return f"not a pack checkpoint ({type(exc).__name__}: {exc})"
    return None


def fit_inversion_packed(configs, tensors, reports, *, track_learning=False):
    """:func:`raydiff.experiments.identify.fit` for many configs at once.

    Every attempt of every config whose classes did not all invert trains in one pack;
    the configs that need another initialisation (up to each one's ``max_retries``) form
    the next, smaller pack. Returns per config an :class:`InversionRun` whose ``monitor``
    is the pack monitor's view of that model, or a :class:`Diverged` error.
    """
    out = [None] * len(configs)
    active = list(range(len(configs)))
    attempt = 0
    first = configs[0]
    x = tensors[0].x
    c = tensors[0].num_classes
    while active:
        seeds = [derived_seed(configs[i].seed, INIT_STREAM, attempt) for i in active]
        pack = Pack.init(seeds, input_shape=x.shape[1:], num_classes=c,
                         hidden=configs[active[0]].hidden_layers(), device=x.device)
        y = torch.stack([tensors[i].y for i in active])
        monitor = PackedInversionMonitor(
            pack, x, y, c, start=first.inversion_start, check_every=first.check_every,
            track_learning=track_learning, rule=first.inversion_rule,
            smoothing=first.inversion_smoothing)
        key = "loss" if attempt == 0 else f"loss_retry{attempt}"
        members = list(active)

        def hook(epoch, losses, monitor=monitor, members=members, key=key):
            monitor(epoch, losses)
            for j, i in enumerate(members):
                if reports is not None and reports[i] is not None and np.isfinite(losses[j]):
                    reports[i]({key: float(losses[j])}, step=epoch)

        result = train_packed(pack, x, y, epochs=first.epochs,
                              lr=[configs[i].lr for i in active], on_epoch=hook,
                              record_every=first.record_every)
        still = []
        for j, i in enumerate(active):
            if j in result.diverged:
                out[i] = diverged_error(result.diverged[j])
                continue
            view = monitor.view(j)
            single = TrainResult(result.epochs_run, list(result.losses[:, j]),
                                 None if result.dynamics is None else result.dynamics.of(j))
            run = InversionRun(view.model, view, single, attempt, attempt + 1)
            best = out[i]
            if best is None or len(view.never_inverted()) < len(best.monitor.never_inverted()):
                out[i] = run
            out[i].attempts = attempt + 1
            if view.never_inverted() and attempt < configs[i].max_retries:
                still.append(i)
        active = still
        attempt += 1
    return out


def run_inversion_pack(configs, reports, data, *, packable, prepare_one, track_learning,
                       score, run, clean_tensors=None):
    """The packing both ``identify`` and ``inversion`` do: fit every packable config in
    one pack (:func:`fit_inversion_packed`), then score each on its own.

    clean_tensors(config, data, device) -> tensors or None: the clean-label training a
    config needs besides its own (identify's confidence / energy under noise); one per
    (seed, lr, max_retries), trained as a second pack and passed to ``score`` last."""
    outcomes, ok, cfgs, device, tensors = start(configs, reports, data, packable=packable,
                                                run=run, prepare_one=prepare_one)
    if not ok:
        return outcomes
    fitted = fit_inversion_packed(cfgs, tensors, [reports[i] for i in ok],
                                  track_learning=track_learning)
    cleans = {}
    if clean_tensors is not None:
        # one clean-label training per (seed, rate, retries): strategy and level do not
        # change it; the noisy trainings that diverged need none
        need = {}
        for j, i in enumerate(ok):
            config = configs[i]
            if not isinstance(fitted[j], Exception):
                clean = clean_tensors(config, data, device)
                if clean is not None:
                    need.setdefault((config.seed, config.lr, config.max_retries), (config, clean))
        if need:
            keys = list(need)
            runs = fit_inversion_packed([need[k][0] for k in keys], [need[k][1] for k in keys],
                                        None)
            cleans = dict(zip(keys, runs))
    for j, i in enumerate(ok):
        config = configs[i]
        if isinstance(fitted[j], Exception):
            outcomes[i] = fitted[j]
            continue
        if clean_tensors is not None:
            clean = cleans.get((config.seed, config.lr, config.max_retries))
            if isinstance(clean, Exception):
                outcomes[i] = clean
                continue
            outcomes[i] = guarded(score, config, reports[i], data, tensors[j],
                                         fitted[j], clean)
        else:
            outcomes[i] = guarded(score, config, reports[i], data, tensors[j], fitted[j])
    return outcomes
