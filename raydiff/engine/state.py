"""The one save/restore of training state, so a killed trial resumes exactly.

A checkpoint holds the epoch, the state of every named module and optimiser (anything
with ``state_dict`` / ``load_state_dict``: networks, torch optimisers, data parameters),
the random generator(s) that order the batches, and extra plain state (trajectories,
the best epoch so far). Restoring loads all of it into freshly built objects, so the run
goes on from the saved epoch as it would have without the interruption.
"""


def save_state(epoch, *, modules, optimizers=None, generators=None, **extra):
    """A checkpoint dict (tensors and plain values, what ``report(checkpoint=...)`` takes).

    modules, optimizers : {name: object with state_dict()}
    generators : {name: torch.Generator}
    extra : more plain state, restored as is by :func:`restore_state`.
    """
    return {"epoch": int(epoch),
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
            "generators": {k: g.get_state() for k, g in (generators or {}).items()},
            **extra}


def restore_state(state, *, modules, optimizers=None, generators=None):
    """Load a :func:`save_state` checkpoint into the given objects (the same names).

    Returns ``(epoch, extra)``: the epoch it was saved at and its extra entries. A name
    the checkpoint lacks (or holds in excess) is a ValueError: a checkpoint of another
    setup must not half-load.
    """
    for kind, objects in (("modules", modules), ("optimizers", optimizers or {}),
                          ("generators", generators or {})):
        saved = state[kind]
        if set(saved) != set(objects):
            raise ValueError(f"checkpoint {kind} {sorted(saved)} do not match this run's "
                             f"{sorted(objects)}")
        for name, obj in objects.items():
            if kind == "generators":
                obj.set_state(saved[name])
            else:
                obj.load_state_dict(saved[name])
    extra = {k: v for k, v in state.items()
             if k not in ("epoch", "modules", "optimizers", "generators")}
    return int(state["epoch"]), extra
