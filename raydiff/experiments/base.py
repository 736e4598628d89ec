"""What an experiment logs through, without knowing about Ray or MLflow.

An experiment's ``run(config, report, data)`` calls ``report(...)`` for metrics and
checkpoints and ``report.table/array/figure/json`` for artifacts. :class:`Report` writes
everything into a local folder, so an experiment runs in a plain Python process (tests,
the GPU benchmark machine); the Tune trainable subclasses it to also send each item to
MLflow and Tune as it is produced.
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

PER_SAMPLE_COLUMNS = ("sample_id", "label", "observed_label", "is_noisy", "is_hard", "hardness",
                      "noise_kind", "split", "hard", "score")


def per_sample_table(*, sample_id, label, observed_label, is_noisy, split, hard, score,
                     hardness=None, is_hard=None, noise_kind=None, **extra):
    """The per-sample contract: one row per scored sample, higher ``score`` = harder.

    The ground truth: ``hardness`` is the config's kind (``noise_kind``, its old name, is
    accepted and written as a copy of it, so reports that group by noise_kind still read
    new tables); ``is_hard`` is True exactly for the samples made hard (any kind),
    ``is_noisy`` for those whose label was changed (False everywhere for an image kind).
    ``TensorData.ground_truth()`` gives all three. ``is_hard`` may be left out for a label
    kind (it is then ``is_noisy``), not for an image kind. ``hard`` may be None (the method
    makes no decision); ``split`` is "train"/"test" or an array of them; ``extra`` adds
    method-specific columns.
    """
    from raydiff.data import IMAGE_KINDS, resolve_hardness

    kind = resolve_hardness(hardness, noise_kind)
    if is_hard is None:
        if kind in IMAGE_KINDS:
            raise ValueError(f"hardness {kind!r} changes images, not labels: pass is_hard "
                             f"(e.g. **tensors.ground_truth()) to per_sample_table")
        is_hard = is_noisy
    n = len(sample_id)
    table = pd.DataFrame({
        "sample_id": np.asarray(sample_id, dtype=np.int64),
        "label": np.asarray(label, dtype=np.int64),
        "observed_label": np.asarray(observed_label, dtype=np.int64),
        "is_noisy": np.asarray(is_noisy, dtype=bool),
        "is_hard": np.asarray(is_hard, dtype=bool),
        "hardness": np.broadcast_to(np.asarray(kind, dtype=object), (n,)),
        "noise_kind": np.broadcast_to(np.asarray(kind, dtype=object), (n,)),
        "split": np.broadcast_to(np.asarray(split, dtype=object), (n,)),
        "hard": (pd.array([None] * n, dtype="boolean") if hard is None
                 else pd.array(np.asarray(hard, dtype=bool), dtype="boolean")),
        "score": np.asarray(score, dtype=np.float64),
    })
    for key, value in extra.items():
        table[key] = value
    return table


class Upstream:
    """The result of the earlier stage's matching trial: its params and artifacts.

    ``fetch(name)``, when given, brings artifact ``name`` into ``folder`` the first time it
    is asked for (and raises FileNotFoundError listing what the run has), so a trial that
    gathers many upstream runs downloads only the artifacts it reads.
    """

    def __init__(self, folder, params=None, run_id=None, fetch=None):
        self.folder = Path(folder)
        self.params = dict(params or {})
        self.run_id = run_id
        self._fetch = fetch

    def path(self, name):
        path = self.folder / name
        if not path.exists() and self._fetch is not None:
            self._fetch(name)
        if not path.exists():
            have = sorted(p.name for p in self.folder.iterdir()) if self.folder.is_dir() else []
            raise FileNotFoundError(f"upstream run {self.run_id or self.folder} has no artifact "
                                    f"{name!r}; it has: {have}")
        return path

    def table(self, name):
        return pd.read_parquet(self.path(name))

    def array(self, name):
        return np.load(self.path(name), allow_pickle=False)

    def json(self, name):
        return json.loads(self.path(name).read_text())

    def torch(self, name):
        """A state saved with :meth:`Report.torch` (tensors, numbers, strings), on the CPU."""
        import torch
        return torch.load(self.path(name), map_location="cpu", weights_only=True)


class PackCheckpoint:
    """The one checkpoint of a pack: every config a pack trains shares it, since the pack's
    models train as one computation and can only resume together.

    Call it as ``checkpoint(state, epoch=e)`` (a dict of tensors and plain values, what
    :func:`raydiff.experiments._packs.train_checkpointed` saves); ``resume_state`` holds
    the state of the pack's last checkpoint when the pack is a resumed one, else None.
    This one keeps the latest state in ``folder/pack_checkpoint.pt`` (a plain process,
    tests); the Tune trainable subclasses it to hand the state to Tune.
    """

    def __init__(self, folder, *, resume_state=None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.resume_state = resume_state
        self.saved = []            # the epochs saved, in order

    def __call__(self, state, *, epoch):
        self._save(state, epoch)
        self.saved.append(int(epoch))

    def _save(self, state, epoch):
        import torch
        torch.save(state, self.folder / "pack_checkpoint.pt")

    def load(self):
        """The state last saved here (what a restarted pack gets as ``resume_state``)."""
        import torch
        return torch.load(self.folder / "pack_checkpoint.pt", map_location="cpu",
                          weights_only=True)


class Report:
    """Collects metrics, artifacts and checkpoints of one experiment run in ``folder``.

    Call it as ``report({"loss": 0.3}, step=epoch)``; pass ``checkpoint=state`` (a dict of
    tensors and plain values) to make the run resumable from there. ``resume_state`` holds
    the state of the last checkpoint when the run is a resumed one, else None.
    ``pack_checkpoint``: the :class:`PackCheckpoint` of the pack this config trains in
    (the same object on every member's report), or None (not in a pack, or a pack that
    does not checkpoint).
    """

    pack_checkpoint = None

    def __init__(self, folder, *, upstream=None, resume_state=None, device="cpu"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._upstream = dict(upstream or {})
        self.resume_state = resume_state
        self.device = device
        self.history = []          # (step, metrics)
        self.tags = {}
        self.training_set = None   # what trains_on declared (a table), or None

    # -- metrics and checkpoints --------------------------------------------------------
    def __call__(self, metrics, *, step=None, checkpoint=None):
        metrics = {k: float(v) for k, v in metrics.items()}
        self.history.append((step, metrics))
        if checkpoint is not None:
            self._save_checkpoint(checkpoint, step)
        self._emit(metrics, step, checkpoint)

    def _save_checkpoint(self, state, step):
        import torch
        torch.save(state, self.folder / "checkpoint.pt")

    def _emit(self, metrics, step, checkpoint):
        """Hook for subclasses: send metrics (and the checkpoint) on as they arrive."""

    def tag(self, key, value):
        self.tags[key] = str(value)

    # -- what the run trained on ----------------------------------------------------------
    def trains_on(self, sample_id, observed_label, is_noisy=None):
        """Declare the training set of this run: ``sample_id`` (N,) ints (index in the
        loaded dataset) and the ``observed_label`` (N,) ints the run fits (after injected
        noise), ``is_noisy`` (N,) bool when known. Kept as :attr:`training_set` (a table
        with ``split == "train"``); the Tune trainable logs it as the MLflow run's dataset
        input, so equal training sets read as equal digests in the UI."""
        table = pd.DataFrame({"sample_id": np.asarray(sample_id, dtype=np.int64),
                              "observed_label": np.asarray(observed_label, dtype=np.int64),
                              "split": "train"})
        if is_noisy is not None:
            table["is_noisy"] = np.asarray(is_noisy, dtype=bool)
        self.training_set = table
        self._trained_on(table)

    def _trained_on(self, table):
        """Hook for subclasses: the run declared its training set (``trains_on``)."""

    # -- artifacts ----------------------------------------------------------------------
    def _written(self, path):
        """Hook for subclasses: an artifact file was just written."""

    def table(self, name, df):
        path = self.folder / name
        df.to_parquet(path, index=False)
        self._written(path)

    def array(self, name, arr):
        path = self.folder / name
        np.save(path, np.asarray(arr), allow_pickle=False)
        self._written(path)

    def json(self, name, obj):
        path = self.folder / name
        path.write_text(json.dumps(obj, indent=1, default=_jsonable))
        self._written(path)

    def torch(self, name, state):
        """Save ``state`` (a dict of tensors and plain values, e.g. model weights) as an
        artifact a later stage loads with :meth:`Upstream.torch`."""
        import torch
        path = self.folder / name
        torch.save(state, path)
        self._written(path)

    def figure(self, name, fig):
        from raydiff.plots import save
        path = self.folder / name
        save(fig, path, dpi=110)
        self._written(path)

    # -- stages -------------------------------------------------------------------------
    def upstreams(self, experiment):
        """Every matching result of the earlier stage(s) running ``experiment`` (a list)."""
        if experiment not in self._upstream:
            raise KeyError(f"this trial consumes no {experiment!r} stage; it consumes "
                           f"{sorted(self._upstream) or 'nothing'} (set `after:` in the sweep)")
        found = self._upstream[experiment]
        return list(found) if isinstance(found, (list, tuple)) else [found]

    def upstream(self, experiment):
        """The one matching result of the earlier stage running ``experiment``."""
        found = self.upstreams(experiment)
        if len(found) != 1:
            raise ValueError(f"{len(found)} {experiment!r} results match this trial; "
                             f"an experiment taking several declares GATHERS")
        return found[0]

    @property
    def last(self):
        """The latest value of every metric reported so far."""
        out = {}
        for _, metrics in self.history:
            out.update(metrics)
        return out


def _jsonable(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
