"""The function every Ray Tune trial runs: config in, experiment run, MLflow and Tune out.

Glue only: it builds the experiment's config, opens (or re-opens) the trial's MLflow run,
fetches the earlier stage's artifacts, restores the last checkpoint and hands the
experiment a :class:`TuneReport`. The run is always closed: FINISHED, or FAILED with the
error as a tag, and a retried trial re-opens the same run instead of adding one.
"""

import dataclasses
import functools
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from ray import tune

from raydiff import tracking
from raydiff.data import data_key
from raydiff.experiments import get_experiment
from raydiff.experiments.base import PackCheckpoint, Report, Upstream
from raydiff.experiments.config import build_config
from raydiff.tune import describe, packs
from raydiff.tune.spec import PackSpec, from_tune


class TuneReport(Report):
    """A Report that sends metrics to MLflow (buffered and batched by the Tracker, flushed
    before every checkpoint) and Tune, and artifacts to MLflow."""

    def __init__(self, folder, *, tracker, run_id, config=None, logged=None, **kwargs):
        super().__init__(folder, **kwargs)
        self.tracker, self.run_id = tracker, run_id
        self.config = dict(config or {})
        # {metric: last step} an earlier attempt of this run logged (:func:`_logged_steps`):
        # epochs redone after a resume from an older checkpoint are not logged twice
        self.logged = dict(logged or {})
        self._data_logged = False
        self._last_tune = 0.0
        self._latest = {}

    def _new(self, metrics, step):
        """The points of ``metrics`` at ``step`` not logged by an earlier attempt."""
        if not self.logged or not step:
            return metrics.items()
        return [(k, v) for k, v in metrics.items() if step > self.logged.get(k, 0)]

    def _emit(self, metrics, step, checkpoint):
        now_ms = int(time.time() * 1000)
        self.tracker.log_metrics(self.run_id, [(k, v, step, now_ms)
                                               for k, v in self._new(metrics, step)])
        self._latest.update(metrics)
        now = time.monotonic()
        if checkpoint is not None:      # MLflow holds every epoch the checkpoint covers
            self.flush()
        # Tune sees the latest values at most once a second, and with every checkpoint
        if checkpoint is not None:
            ckpt_dir = self.folder / "checkpoint"
            tune.report({**self._latest, "mlflow_run_id": self.run_id},
                        checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))
            self._last_tune = now
        elif now - self._last_tune > 1.0:
            tune.report({**self._latest, "mlflow_run_id": self.run_id})
            self._last_tune = now

    def _save_checkpoint(self, state, step):
        import torch
        ckpt_dir = self.folder / "checkpoint"
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        ckpt_dir.mkdir()
        torch.save(state, ckpt_dir / "state.pt")

    def _written(self, path):
        self.tracker.log_artifact(self.run_id, path)
        if Path(path).name == "per_sample.parquet" and not self._data_logged:
            self._log_training_data(path)

    def _log_training_data(self, path):
        """The first per-sample table names the samples and labels the trial trained on,
        unless the experiment declared them (``trains_on``)."""
        import pandas as pd
        self._trained_on(pd.read_parquet(path, columns=None))

    def _trained_on(self, table):
        """Log the training set as the run's dataset input (the MLflow UI's Dataset
        column), once per run."""
        if self._data_logged:
            return
        found = describe.training_data(table, self.config)
        if found is not None:
            self.tracker.log_training_data(self.run_id, **found)
            self._data_logged = True

    def tag(self, key, value):
        super().tag(key, value)
        self.tracker.set_tags(self.run_id, {key: value})

    def flush(self):
        self.tracker.flush(self.run_id)


def _restore_state(report_tags, context=None):
    """The state saved by the trial's last checkpoint, or None (with the reason tagged when
    a checkpoint exists but cannot be read: the trial then starts over).

    The last checkpoint is the newest readable one of the trial's folder on the storage
    path when that is newer than the one Tune hands back (:func:`_newer_checkpoints`),
    else Tune's."""
    checkpoint = tune.get_checkpoint()
    trial_id = tune.get_context().get_trial_id()
    candidates = _newer_checkpoints(context, checkpoint, trial_id) + (
        [checkpoint] if checkpoint is not None else [])
    return _load_first(candidates, report_tags)


def _load_first(candidates, report_tags):
    """The state of the first readable checkpoint of ``candidates``, or None (the reasons
    tagged ``raydiff.checkpoint_error`` when there were checkpoints but none was readable:
    truncated, corrupt, or carrying code; read with ``weights_only=True``)."""
    import torch
    if not candidates:
        return None
    errors = []
    for found in candidates:
        try:
            with found.as_directory() as folder:
                return torch.load(Path(folder) / "state.pt", weights_only=True,
                                  map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint: try the next
            errors.append(f"{type(exc).__name__}: {exc}")
    reason = ("checkpoint unreadable, restarting from scratch: " + "; ".join(errors))
    print(f"raydiff: {reason}", flush=True)
    report_tags["raydiff.checkpoint_error"] = reason[:500]
    return None


def _newer_checkpoints(context, known, trial_id):
    """Checkpoints of this trial on the storage path newer than ``known`` (Tune's, or
    None), newest first.

    Tune hands a resumed trial the last checkpoint its experiment state recorded, and
    saves that state every ``TUNE_GLOBAL_CHECKPOINT_S``: a checkpoint the trial wrote
    after the last save (the driver died in between) is on the storage path but unknown
    to Tune. Looked up in ``<storage>/<stage>/<trial id>_*/checkpoint_NNNNNN``."""
    from ray.tune import Checkpoint
    if not context or not context.get("storage"):
        return []
    import pyarrow.fs as pafs
    try:
        fs, root = pafs.FileSystem.from_uri(context["storage"])
        stage_dir = f"{root.rstrip('/')}/{context['stage_dir']}"
        trials = [i.path for i in fs.get_file_info(pafs.FileSelector(stage_dir,
                                                                     allow_not_found=True))
                  if i.type == pafs.FileType.Directory and i.base_name.startswith(f"{trial_id}_")]
        found = [i for t in trials for i in fs.get_file_info(pafs.FileSelector(t))
                 if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")]
    except (OSError, ValueError):
        return []
    floor = _checkpoint_index(known.path) if known is not None else -1
    newer = sorted((i for i in found if _checkpoint_index(i.path) > floor),
                   key=lambda i: _checkpoint_index(i.path), reverse=True)
    return [Checkpoint(i.path, filesystem=fs) for i in newer]


def _checkpoint_index(path):
    """N of a Tune checkpoint folder ``.../checkpoint_0000NN`` (-1 when not one)."""
    name = Path(str(path)).name
    digits = name[len("checkpoint_"):]
    return int(digits) if name.startswith("checkpoint_") and digits.isdigit() else -1


@dataclasses.dataclass
class _Opened:
    """One config's MLflow run, opened by this attempt of its trial (:func:`_open_run`)."""
    module: object              # the experiment's module
    config: object              # its Config, defaults filled in
    run_id: str
    status: str                 # NEW, FINISHED (nothing to redo) or the status it had
    report: TuneReport | None   # None when FINISHED


def _open_run(spec, *, report_class, trial_id, run_name, context, tracker, folder, node,
              tags=None, restore=False):
    """Open (or, on a retry or resume, re-open) the MLflow run of one config: its full
    config (defaults included) and the upstream keys as params, the sweep's tags plus
    ``tags``; then, unless it already FINISHED, its upstream artifacts and a report.
    ``restore``: the report resumes from the trial's last checkpoint (a pack restores
    its own, :func:`run_pack_trial`). ``node``: where this attempt runs."""
    module = get_experiment(spec.experiment)
    config = build_config(module.Config, spec.config, f"stage {spec.stage}")
    params = {**dataclasses.asdict(config), **{k: v for k, v in spec.params.items() if "." in k}}
    run_tags = {tracking.TAG_SWEEP: context["sweep"], tracking.TAG_SESSION: context["session"],
                tracking.TAG_STAGE: spec.stage, tracking.TAG_EXPERIMENT: spec.experiment,
                tracking.TAG_KIND: "trial", **(tags or {})}
    run_id, status = tracker.trial_run(context["experiment_id"], stage=spec.stage,
                                       trial_id=trial_id, run_name=run_name, params=params,
                                       tags=run_tags, parent=context.get("parent_run_id"))
    if status == "FINISHED":
        return _Opened(module, config, run_id, status, None)
    try:
        upstream = _upstreams(tracker, spec.upstream, folder)
        node = dict(node)
        state = _restore_state(node, context) if restore else None
        report = report_class(folder / "artifacts", tracker=tracker, run_id=run_id,
                              config=params, upstream=upstream, resume_state=state,
                              device=node["raydiff.device"],
                              logged=_logged_steps(tracker, run_id) if status != "NEW" else None)
        if status != "NEW":
            node["raydiff.retried"] = "true"
        tracker.set_tags(run_id, node)
    except BaseException:       # the run was opened: it must not stay RUNNING
        _fail_run(tracker, run_id, traceback.format_exc())
        raise
    return _Opened(module, config, run_id, status, report)


def _close_run(opened, tracker, metrics, extra):
    """Log what ``metrics`` (an experiment's return) holds that the report has not, and
    ``extra``; close the run FINISHED. Returns the run's final metrics."""
    report = opened.report
    metrics = metrics or {}
    unlogged = {k: v for k, v in metrics.items() if k not in report.last and _is_number(v)}
    report({**unlogged, **extra})
    report.flush()
    tracker.end(opened.run_id, "FINISHED")
    return {**report.last, **metrics}


def _fail_run(tracker, run_id, reason, report=None):
    """Close a run FAILED with ``reason`` as its ``raydiff.error`` tag (its buffered
    metrics flushed first); a store that cannot be reached is printed, not raised."""
    try:
        if report is not None:
            report.flush()
        tracker.set_tags(run_id, {"raydiff.error": str(reason)[-4000:]})
        tracker.end(run_id, "FAILED")
    except Exception as exc:  # noqa: BLE001
        print(f"raydiff: could not mark run {run_id} FAILED: {exc}", flush=True)


def _attempt(context):
    """(tracker, Tune trial id, device, node tags) of this attempt of a trial, with the
    worker's torch threads set to the trial's CPUs."""
    import ray
    import torch
    torch.set_num_threads(max(1, int(context["cpus_per_trial"])))
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    node = {"raydiff.node": ray.util.get_node_ip_address(),
            "raydiff.node_id": ray.get_runtime_context().get_node_id(),
            "raydiff.pid": str(os.getpid()), "raydiff.device": device}
    return _tracker(context["tracking_uri"]), tune.get_context().get_trial_id(), device, node


def _data(module, config, datasets):
    """The loaded dataset a config trains on (None for an experiment that reads only its
    upstream runs)."""
    if not getattr(module, "NEEDS_DATA", True):
        return None
    return datasets[data_key(dataclasses.asdict(config))]


def run_trial(param, *, datasets, context):
    """Tune function trainable. ``param["trial"]`` holds a TrialSpec or PackSpec
    (:func:`raydiff.tune.spec.tune_value`); ``datasets`` maps a data key to a Dataset
    shared through the object store; ``context`` has the tracking URI, MLflow experiment
    id, sweep name and session."""
    spec = from_tune(param)
    if isinstance(spec, PackSpec):
        return run_pack_trial(spec, datasets=datasets, context=context)
    drawn = {k: v for k, v in param.items() if k != "trial"}   # a search algorithm's values
    spec = dataclasses.replace(spec, config={**spec.config, **drawn})
    tracker, trial_id, device, node = _attempt(context)
    work = Path(tempfile.mkdtemp(prefix=f"raydiff-{trial_id}-"))
    opened = None
    try:
        opened = _open_run(spec, report_class=TuneReport, trial_id=trial_id,
                           run_name=describe.trial_name(param, trial_id), context=context,
                           tracker=tracker, folder=work, node=node, restore=True)
        if opened.status == "FINISHED":
            # finished before the driver went down, after Tune's last state save: keep it
            tune.report({**tracker.final_metrics(opened.run_id), "mlflow_run_id": opened.run_id})
            return
        started = time.monotonic()
        metrics = opened.module.run(opened.config, opened.report,
                                    _data(opened.module, opened.config, datasets)) or {}
        final = _close_run(opened, tracker, metrics,
                           {"trial_seconds": time.monotonic() - started})
        tune.report({**{k: v for k, v in final.items() if _is_number(v)},
                     "mlflow_run_id": opened.run_id})
    except BaseException:
        # close the run FAILED (one that had FINISHED stays so); the original error propagates
        if opened is not None and opened.status != "FINISHED":
            _fail_run(tracker, opened.run_id, traceback.format_exc()[-4000:], opened.report)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


class PackConfigReport(TuneReport):
    """The report of one config inside a pack: metrics and artifacts go to the config's own
    MLflow run; Tune hears from the pack trial as a whole (:func:`run_pack_trial`), so a
    config never calls ``tune.report``. A pack checkpoints as one unit, through the
    :class:`TunePackCheckpoint` its configs' reports share (``pack_checkpoint``); a
    checkpoint one config asks for on its own is dropped."""

    def _emit(self, metrics, step, checkpoint):
        now_ms = int(time.time() * 1000)
        self.tracker.log_metrics(self.run_id, [(k, v, step, now_ms)
                                               for k, v in self._new(metrics, step)])
        self._latest.update(metrics)

    def _save_checkpoint(self, state, step):
        pass


class TunePackCheckpoint(PackCheckpoint):
    """A pack trial's one checkpoint, saved as a single trial's is (:class:`TuneReport`): a
    directory handed to ``tune.report``, which Tune gives back through
    ``tune.get_checkpoint`` when it retries the trial or resumes the sweep. It records the
    configs (positions in the PackSpec) it was saved for; their metrics are flushed first,
    so MLflow holds every epoch the checkpoint covers."""

    def __init__(self, folder, *, configs, reports, run_id, resume_state=None):
        super().__init__(folder, resume_state=resume_state)
        self.configs, self.reports, self.run_id = list(configs), list(reports), run_id

    def _save(self, state, epoch):
        import torch
        for report in self.reports:
            report.flush()
        ckpt_dir = self.folder / "checkpoint"
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        ckpt_dir.mkdir()
        torch.save({"pack_configs": self.configs, "pack": state}, ckpt_dir / "state.pt")
        tune.report({"pack_epoch": int(epoch), "mlflow_run_id": self.run_id},
                    checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))


def _pack_resume_state(saved, positions):
    """(the pack state to resume from, or None; why not, or None) of the state restored
    from a pack trial's checkpoint, for the configs (positions) it trains now."""
    if saved is None:
        return None, None
    # "pack_members": the key of checkpoints saved before the typed trial contract
    found = (saved.get("pack_configs", saved.get("pack_members"))
             if isinstance(saved, dict) else None)
    if found != list(positions):
        return None, (f"pack checkpoint saved for configs {found}, unfinished now "
                      f"{list(positions)}: restarting those from scratch")
    return saved["pack"], None


def _peak_memory(device):
    """The worker's peak memory while the pack ran (since :func:`_reset_peak_memory`)."""
    import resource
    import torch
    peak = {"pack_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        peak["pack_peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return peak


def _reset_peak_memory(device):
    """Reset the peak counters, so a reused worker reports this pack's peak, not its
    lifetime's: Linux resets the resident high-water mark (and ``ru_maxrss``) on writing
    5 to /proc/self/clear_refs; elsewhere the peak is the process's."""
    import torch
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def run_pack_trial(spec, *, datasets, context):
    """One Tune trial training the configs of a :class:`~raydiff.tune.spec.PackSpec`
    through the experiment's ``run_pack``.

    Every config has its own MLflow run (tags ``raydiff.pack``, ``raydiff.pack_size``),
    found again on retry / resume by the trial tag ``<trial>/<position>``; configs whose
    run FINISHED are not trained again, so a restarted pack runs only the rest.
    ``run_pack`` returns one entry per config it was given: its metrics, or the exception
    that config failed with (a diverged model, an error in its own post-processing): that
    run is closed FAILED with the reason and the others carry on. The trial errors only
    when ``run_pack`` itself raises (every run it was training is then FAILED and Tune
    retries the pack) or no config finished. Tune hears the mean of each metric over the
    finished configs and ``pack_runs``, the run id of each config (None: it failed).

    Checkpoints: a pack checkpoints as one unit (:class:`TunePackCheckpoint`, shared by
    its configs' reports as ``pack_checkpoint``; the contract is in
    :mod:`raydiff.experiments._packs`). When Tune retries the trial (a killed worker) or
    ``--resume`` restarts it, the pack resumes from its last checkpoint if that was saved
    for exactly the configs still unfinished; otherwise (some finished since, or the
    checkpoint is unreadable: tag ``raydiff.checkpoint_error``) those configs train again
    from epoch 0. Stages whose ``run_pack`` does not checkpoint (identify, inversion,
    imbalance) always train their unfinished configs again from the start.

    Every config's run gets the pack's wall time (``pack_seconds``), its share of it
    (``trial_seconds``) and the worker's peak memory while the pack ran:
    ``pack_peak_rss_mib`` (resident, ``ru_maxrss``) and on CUDA ``pack_peak_cuda_mib``
    (``torch.cuda.max_memory_allocated``).
    """
    tracker, trial_id, device, node = _attempt(context)
    pack_id = f"{spec.stage}/{trial_id}"
    pack_tags = {packs.PACK_TAG: pack_id, packs.PACK_SIZE_TAG: str(len(spec.configs))}
    work = Path(tempfile.mkdtemp(prefix=f"raydiff-{trial_id}-"))
    run_ids, finals = [None] * len(spec.configs), [None] * len(spec.configs)
    todo = {}               # position -> _Opened, the configs this attempt trains
    try:
        for i, config_spec in enumerate(spec.configs):
            try:
                opened = _open_run(config_spec, report_class=PackConfigReport,
                                   trial_id=f"{trial_id}/{i}",
                                   run_name=config_spec.name or f"{spec.stage}-{i}",
                                   context=context, tracker=tracker, folder=work / f"config{i}",
                                   node=node, tags=pack_tags)
            except Exception:  # noqa: BLE001 - this config's own setup: it alone fails
                print(f"raydiff: config {i} of pack {pack_id} could not start:\n"
                      f"{traceback.format_exc()}")
                continue
            run_ids[i] = opened.run_id
            if opened.status == "FINISHED":
                finals[i] = tracker.final_metrics(opened.run_id)
            else:
                todo[i] = opened
        if todo:
            outcomes, extra = _train_pack(todo, datasets, context, work, device)
            for (i, opened), outcome in zip(todo.items(), outcomes):
                if isinstance(outcome, BaseException):
                    _fail_run(tracker, opened.run_id,
                              "".join(traceback.format_exception(outcome)), opened.report)
                    run_ids[i] = None
                else:
                    finals[i] = _close_run(opened, tracker, outcome, extra)
    except BaseException:
        error = traceback.format_exc()[-4000:]
        for i, opened in todo.items():
            if finals[i] is None:
                _fail_run(tracker, opened.run_id, error, opened.report)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    done = [f for f in finals if f is not None]
    if not done:
        raise RuntimeError(f"no config of pack {pack_id} finished (each failed run says why "
                           f"in its raydiff.error tag)")
    keys = set.intersection(*(set(k for k, v in f.items() if _is_number(v)) for f in done))
    summary = {k: sum(float(f[k]) for f in done) / len(done) for k in keys}
    tune.report({**summary, "mlflow_run_id": next(r for r in run_ids if r),
                 "pack_runs": run_ids, "pack_finished": len(done),
                 "pack_failed": len(spec.configs) - len(done)})


def _train_pack(todo, datasets, context, work, device):
    """Run the experiment's ``run_pack`` on the configs of ``todo`` ({position: _Opened}),
    resumed from the pack's checkpoint when it was saved for exactly these positions.
    Returns (one outcome per config, the metrics every config's run gets: its share of
    the pack's wall time, the wall time, the worker's peak memory)."""
    opened = list(todo.values())
    module = opened[0].module
    restore_tags = {}
    resume, why = _pack_resume_state(_restore_state(restore_tags, context), list(todo))
    if why:
        print(f"raydiff: {why}", flush=True)
        restore_tags["raydiff.checkpoint_error"] = why[:500]
    checkpoint = TunePackCheckpoint(work / "pack", configs=list(todo),
                                    reports=[o.report for o in opened],
                                    run_id=opened[0].run_id, resume_state=resume)
    for o in opened:
        o.report.pack_checkpoint = checkpoint
        for key, value in restore_tags.items():
            o.report.tag(key, value)
    _reset_peak_memory(device)
    started = time.monotonic()
    outcomes = module.run_pack([o.config for o in opened], [o.report for o in opened],
                               _data(module, opened[0].config, datasets))
    seconds = time.monotonic() - started
    if len(outcomes) != len(opened):
        raise RuntimeError(f"{module.NAME}.run_pack returned {len(outcomes)} results "
                           f"for {len(opened)} configs")
    # a config's cost is its share of the pack (what it would have cost as one of
    # len(todo) trials run back to back); the pack's wall time is kept beside it
    return outcomes, {"trial_seconds": seconds / len(opened), "pack_seconds": seconds,
                      **_peak_memory(device)}


def _logged_steps(tracker, run_id):
    """{metric: the last step logged} of a run an earlier attempt of the trial logged to.

    A retried or resumed trial goes on from its last checkpoint, which may be older than
    the last epoch it logged: the epochs in between are trained again from the checkpoint
    but not logged again, so every (metric, step) is in the run once.
    """
    keys = tracker.final_metrics(run_id)
    return {k: max((m.step for m in tracking.retrying(tracker.client.get_metric_history,
                                                      run_id, k)), default=0)
            for k in keys}


@functools.lru_cache(maxsize=4)
def _tracker(uri):
    # one client per worker process: reused actors skip the store's start-up cost
    return tracking.Tracker(uri)


def _fetch(tracker, run_id, folder, name):
    """Download artifact ``name`` of ``run_id`` into ``folder`` (on first use, see Upstream)."""
    try:
        tracker.download(run_id, folder, name)
    except Exception as exc:  # noqa: BLE001 - MLflow's errors for a missing artifact vary
        have = sorted(a.path for a in tracking.retrying(tracker.client.list_artifacts, run_id))
        raise FileNotFoundError(f"upstream run {run_id} has no artifact {name!r} "
                                f"({type(exc).__name__}); it has: {have}") from None


def _upstreams(tracker, runs, folder):
    """{experiment: Upstream or [Upstream]} for a trial's upstream run ids ({experiment:
    run id or [run ids]}); each fetches its artifacts under ``folder/upstream`` on first
    read."""
    upstream = {}
    for experiment, run_ids in runs.items():
        group = run_ids if isinstance(run_ids, list) else [run_ids]
        found = [Upstream(folder / "upstream" / r, _params(tracker, r), r,
                          fetch=functools.partial(_fetch, tracker, r, folder / "upstream" / r))
                 for r in group]
        upstream[experiment] = found if isinstance(run_ids, list) else found[0]
    return upstream


def _params(tracker, run_id):
    import json
    run = tracking.retrying(tracker.client.get_run, run_id)
    return json.loads(run.data.tags.get(tracking.TAG_PARAMS, "{}"))


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)

