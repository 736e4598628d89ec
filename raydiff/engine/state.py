"""The one save/restore of training state, so a killed trial resumes exactly.

A checkpoint holds the epoch, the state of every named module and optimiser (anything
with ``state_dict`` / ``load_state_dict``: networks, torch optimisers, data parameters),
the random generator(s) that order the batches, and extra plain state (trajectories,
the best epoch so far). Restoring loads all of it into freshly built objects, so the run
goes on from the saved epoch as it would have without the interruption.
"""


_RESERVED = ("epoch", "modules", "optimizers", "generators")


def save_state(epoch, *, modules, optimizers=None, generators=None, **extra):
    """A checkpoint dict (tensors and plain values, what ``report(checkpoint=...)`` takes).

    modules : {name: object with state_dict()}; each module's state sits at the top level
        under its name (``state["model"]`` is the network's state dict), and
        ``state["modules"]`` lists the names.
    optimizers : {name: torch optimizer}
    generators : {name: torch.Generator}
    extra : more plain state, given back as is by :func:`restore_state`.
    """
    clash = set(modules) & (set(_RESERVED) | set(extra))
    if clash:
        raise ValueError(f"module names {sorted(clash)} clash with checkpoint entries")
    return {"epoch": int(epoch), "modules": sorted(modules),
            **{k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
            "generators": {k: g.get_state() for k, g in (generators or {}).items()},
            **extra}


def restore_state(state, *, modules, optimizers=None, generators=None):
    """Load a :func:`save_state` checkpoint into the given objects (the same names).

    Returns ``(epoch, extra)``: the epoch it was saved at and its extra entries. A name
    the checkpoint lacks (or holds in excess) is a ValueError: a checkpoint of another
    setup must not half-load.
    """
    saved = {"modules": {k: state[k] for k in state["modules"]},
             "optimizers": state["optimizers"], "generators": state["generators"]}
    for kind, objects in (("modules", modules), ("optimizers", optimizers or {}),
                          ("generators", generators or {})):
        if set(saved[kind]) != set(objects):
            raise ValueError(f"checkpoint {kind} {sorted(saved[kind])} do not match this "
                             f"run's {sorted(objects)}")
        for name, obj in objects.items():
            if kind == "generators":
                obj.set_state(saved[kind][name])
            else:
                obj.load_state_dict(saved[kind][name])
    extra = {k: v for k, v in state.items()
             if k not in _RESERVED and k not in state["modules"]}
    return int(state["epoch"]), extra
