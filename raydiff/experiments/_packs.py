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
"""

import traceback

import numpy as np
import torch

from raydiff.data import INIT_STREAM, derived_seed
from raydiff.engine.inversion import InversionRun
from raydiff.engine.packed import Pack, PackedInversionMonitor, train_packed
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
    cfgs = [configs[i] for i in ok]
    device = reports[ok[0]].device
    return outcomes, ok, cfgs, device, [prepare_one(c, device, data) for c in cfgs]


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
