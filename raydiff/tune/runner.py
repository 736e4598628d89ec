"""Run a validated sweep on Ray Tune, its stages as a graph, every trial tracked in MLflow.

Each stage is one Tuner (:func:`_run_stage`), run in a driver thread of its own as soon
as the stages it reads have finished (:func:`raydiff.tune.graph.run_graph`); independent
stages run at once and Ray places their trials by the resources each asks for, across
all of them. A failed stage skips only the stages that read it.

Layout of a session on the storage path: ``<storage>/<sweep>/<session>/sweep.yaml`` (the
resolved sweep) and one Tune experiment folder per stage. ``resume=True`` takes the latest
session of the sweep and restores each stage, whichever of them had finished, were
running or had not started: finished trials stay finished, unfinished and errored ones
run again (from their last checkpoint), stages never started start.
"""

import collections
import os
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs
import ray
import yaml
from ray import tune

from raydiff import tracking
from raydiff.data import data_key, load_dataset
from raydiff.experiments.config import ConfigError
from raydiff.tune import describe, graph, packs, progress
from raydiff.tune import sweep as sweeps
from raydiff.tune.spec import TrialRecord, from_tune, tune_value
from raydiff.tune.trainable import run_trial


def _storage(storage_path):
    """(pyarrow filesystem, path inside it, URI prefix Tune should use) of a storage path."""
    uri = storage_path if "://" in storage_path else str(Path(storage_path).absolute())
    fs, root = pafs.FileSystem.from_uri(uri)
    return fs, root.rstrip("/"), uri.rstrip("/")


def _latest_session(fs, base):
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except OSError:
        return None
    sessions = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory
                      and fs.get_file_info(f"{i.path}/sweep.yaml").type == pafs.FileType.File)
    return sessions[-1] if sessions else None


def _load_datasets(sweep):
    """Every dataset the sweep's trials need, loaded once on the driver."""
    keys = {}
    for stage, specs in zip(sweep.stages, sweeps.plan(sweep).values()):
        if not getattr(stage.module, "NEEDS_DATA", True):
            continue
        for spec in specs:
            config = sweeps.resolved(stage, {k: v for k, v in spec.config.items()
                                             if not sweeps.is_axis(v)})
            keys.setdefault(data_key(config), config)
    return {key: load_dataset(c["dataset"], root=c["data_root"], download=c["download"],
                              image_size=c["image_size"]) for key, c in keys.items()}


def _search_space(dists):
    space = {}
    for key, axis in dists.items():
        (kind, values), = axis.items()
        space[key] = {"uniform": lambda v: tune.uniform(*v),
                      "loguniform": lambda v: tune.loguniform(*v),
                      "randint": lambda v: tune.randint(int(v[0]), int(v[1]) + 1),
                      }[kind](values)
    return space


def _searcher(search):
    if search["algorithm"] == "random":
        return None
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as exc:
        raise ConfigError(f"search.algorithm=optuna needs the optuna package ({exc}); "
                          f"pip install optuna, or use algorithm: random") from None
    return OptunaSearch(metric=search["metric"], mode=search["mode"])


def _stage_run(tracker, experiment_id, sweep, session, stage, keys):
    """The parent run of ``stage`` in ``session`` (under the session's run), made on the
    driver before the stage's trials start, found again on resume."""
    fixed = {k: v for k, v in stage.config.items() if not sweeps.is_axis(v)}
    return tracker.group_run(
        experiment_id, kind="stage", sweep=sweep.name, session=session, stage=stage.name,
        name=describe.stage_label(stage), parent=tracker.session_run(experiment_id, sweep.name, session),
        params=fixed, tags={tracking.TAG_EXPERIMENT: stage.experiment,
                            "raydiff.varied": ",".join(keys)})


_REGISTRY_LOCK = threading.Lock()

# save Tune's experiment state often, so a killed driver loses little bookkeeping. At 1,000
# trials a save took up to ~0.9 s and ~4% of the driver's time at 5 s, 30 s and "auto"
# alike (benchmarks/tune_state_checkpoint.py, docs/cluster.md): 5 s costs nothing more.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")    # see _tune_files


def run_sweep(sweep, *, address=None, tracking_uri=None, storage_path="ray_results",
              resume=False, num_cpus=None, dashboard=True, dashboard_host="127.0.0.1",
              verbose=1, series=False, pack=None):
    """Run every stage of ``sweep`` as a graph: a stage starts once the stages it reads
    have finished (``series``: one stage at a time, in file order, the old way).

    Returns {"session", "tracking_uri", "experiment_id", "stages": {stage: {"state":
    finished|failed|skipped, "reason", "finished": n, "failed": n, "seconds"}}}.
    A local Ray's dashboard listens on ``dashboard_host``: loopback unless asked.
    ``pack`` (an int >= 1 or "auto", ``raydiff run --pack``) overrides every stage's
    ``pack`` key."""
    if pack is not None:
        packs.check_pack(pack, "--pack")
    tracker = tracking.Tracker(tracking_uri)
    tracker.check()
    datasets = _load_datasets(sweep)           # a missing dataset stops us before anything is written
    fs, root, uri = _storage(storage_path)
    base = f"{root}/{sweep.name}"
    session = _latest_session(fs, base) if resume else None
    if resume and session is None:
        print(f"raydiff: no earlier session of {sweep.name} under {storage_path}; starting a new one")
    if session is not None:
        with fs.open_input_stream(f"{base}/{session}/sweep.yaml") as f:
            saved = yaml.safe_load(f.read().decode())
        if saved != sweep.raw:
            print("raydiff: the sweep file changed since that session; resuming the saved version")
            sweep = sweeps.validate(saved, source=f"{base}/{session}/sweep.yaml")
            datasets = _load_datasets(sweep)
        print(f"raydiff: resuming session {session} of {sweep.name}")
    else:
        session = time.strftime("%Y%m%d-%H%M%S")
        fs.create_dir(f"{base}/{session}", recursive=True)
        with fs.open_output_stream(f"{base}/{session}/sweep.yaml") as f:
            f.write(yaml.safe_dump(sweep.raw, sort_keys=False).encode())
    experiment_id = tracker.experiment_id(sweep.name)
    if pack is not None:
        for stage in sweep.stages:
            stage.pack = pack

    if not ray.is_initialized():
        ray_context = ray.init(address=address, num_cpus=None if address else num_cpus,
                           include_dashboard=dashboard, dashboard_host=dashboard_host,
                           log_to_driver=True)
        if dashboard and getattr(ray_context, "dashboard_url", None):
            # a local Ray turns token auth on: the page asks for the token before it shows
            # anything, and nothing on it says where to find it
            print(f"raydiff: Ray dashboard at http://{ray_context.dashboard_url} (trials are its "
                  f"Actors; if it asks for a token: `ray get-auth-token`)", flush=True)
    if ray.get_runtime_context().get_node_id() and ray.cluster_resources().get("GPU", 0) == 0:
        for stage in sweep.stages:
            if stage.resources.get("gpu"):
                print(f"raydiff: stage {stage.name} asks for gpu {stage.resources['gpu']} per "
                      f"trial but the cluster has no GPU; running it on CPUs")
                stage.resources = {**stage.resources, "gpu": 0, "cpu": stage.resources["cpu"] or 1}
    results_by_stage = {}
    progress.choose_output(verbose)
    # the session's parent run exists before any stage thread looks it up
    session_run = tracker.session_run(experiment_id, sweep.name, session)
    context = {"sweep": sweep, "session": session, "uri": uri, "tracker": tracker,
               "experiment_id": experiment_id, "datasets": datasets, "resume": resume,
               "verbose": verbose}
    summary = graph.run_graph(
        sweep.after, lambda name: _run_stage(sweep.stage(name), results_by_stage, **context),
        series=series, log=lambda line: print(line, flush=True))
    print(f"raydiff: stages of session {session}" + (" (in series)" if series else "") + ":")
    for line in graph.summary_lines(summary):
        print(line)
    tracker.end(session_run, "FINISHED")
    return {"session": session, "stages": summary, "tracking_uri": tracker.uri,
            "experiment_id": experiment_id}


def _run_stage(stage, results_by_stage, *, sweep, session, uri, tracker, experiment_id,
               datasets, resume, verbose):
    """Run (or, resuming, restore) the Tuner(s) of one stage to the end; returns
    {"finished": n, "failed": m} and puts its finished trials in ``results_by_stage``.

    Called in a thread of its own, beside the other stages that run at the same time; the
    stages it reads have finished (their trials are in ``results_by_stage``)."""
    own, dists = sweeps.expand_own(stage, sweep.num_samples)
    specs = sweeps.join(stage, own, results_by_stage)
    if not specs:
        print(f"raydiff: stage {stage.name} has no trials: no trial of "
              f"{stage.after} finished")
        results_by_stage[stage.name] = []
        return {"finished": 0, "failed": 0}
    keys = describe.name_specs(describe.stage_label(stage), specs, own=stage.config)
    parent = _stage_run(tracker, experiment_id, sweep, session, stage, keys)
    configs = len(specs)
    if not stage.search:
        specs = _packed_specs(stage, specs, keys, datasets)
    context = {"tracking_uri": tracker.uri, "experiment_id": experiment_id,
               "sweep": sweep.name, "session": session, "parent_run_id": parent,
               "cpus_per_trial": stage.resources["cpu"] or 1,
               # where the trials' checkpoints are (see trainable._newer_checkpoints)
               "storage": f"{uri}/{sweep.name}/{session}", "stage_dir": stage.name}
    trainable_name = _register_trainable(sweep, stage, datasets, context)
    # a grid stage is one Tune run; a search stage runs one search per upstream match
    jobs = ([(stage.name, {"trial": tune.grid_search([tune_value(s) for s in specs])})]
            if not stage.search else
            [(f"{stage.name}-{i}", {"trial": tune_value(spec), **_search_space(dists)})
             for i, spec in enumerate(specs)])
    finished, failed = [], 0
    for name, space in jobs:
        session_uri = f"{uri}/{sweep.name}/{session}"
        path = f"{session_uri}/{name}"
        if resume and tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(path, trainable_name, resume_errored=True)
        else:
            tuner = _tuner(trainable_name, space, stage, specs, keys=keys, name=name,
                           storage=session_uri, max_failures=sweep.max_failures,
                           verbose=verbose)
        for result in tuner.fit():
            got, lost = _finished(stage, result)
            finished += got
            failed += lost
    tracker.close_stale(sweep.name, session, stage=stage.name)
    tracker.end(parent, "FAILED" if failed and not finished else "FINISHED")
    results_by_stage[stage.name] = finished
    runs = tracker.runs(sweep.name, session=session)
    retried = retried_summary(runs, stage.name)
    hosts = hosts_summary(runs, stage.name, _alive_hosts())
    print(f"raydiff: stage {stage.name}: {len(finished)} trials finished, {failed} failed"
          + (f" (configs, in {len(specs)} packed trials)" if len(specs) < configs else "")
          + (f"; {hosts}" if hosts else "") + (f"; {retried}" if retried else ""), flush=True)
    return {"finished": len(finished), "failed": failed, "retried": retried}


def _register_trainable(sweep, stage, datasets, context):
    """Register the stage's trainable (:func:`run_trial` with the datasets, the stage's
    context and resources) with Tune; returns its name."""
    with_data = tune.with_parameters(run_trial, datasets=datasets, context=context)
    # the dashboard's Actors page shows a trial's actor by its function's name
    with_data.__name__ = f"raydiff {sweep.name}/{stage.name}"
    trainable = tune.with_resources(
        with_data, {"cpu": stage.resources["cpu"], "gpu": stage.resources["gpu"]})
    # Tune finds a trial's trainable by name in one registry per Ray session: concurrent
    # stages (other resources, other context) must not share the name. The registry is not
    # thread-safe (it iterates a dict another thread's registration grows), so we register
    # under a lock and hand Tune the name, which it does not register again.
    name = f"run_trial_{stage.name}"
    with _REGISTRY_LOCK:
        tune.register_trainable(name, trainable)
    return name


def _tuner(trainable_name, space, stage, specs, *, keys, name, storage, max_failures, verbose):
    """A new Tuner of one grid (or one search) of ``stage``: the progress table and trial
    names of :mod:`raydiff.tune.progress`, actors reused, Tune retrying a trial up to
    ``max_failures`` times, two checkpoints kept per trial."""
    output, naming = progress.tune_output(stage, specs, keys=keys, verbose=verbose)
    search = {}
    if stage.search:
        search = {"metric": stage.search["metric"], "mode": stage.search["mode"],
                  "num_samples": stage.search["num_samples"],
                  "search_alg": _searcher(stage.search)}
    return tune.Tuner(trainable_name, param_space=space,
                      tune_config=tune.TuneConfig(reuse_actors=True, **search, **naming),
                      run_config=tune.RunConfig(
                          name=name, storage_path=storage,
                          failure_config=tune.FailureConfig(max_failures=max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                          callbacks=_tune_files(), **output))


def retried_summary(runs, stage):
    """What of ``stage`` ran more than once, from its trial runs' tags (``raydiff.retried``
    on a run re-opened after its worker or node died or the driver was resumed,
    ``raydiff.resumed_from_epoch``, ``raydiff.checkpoint_error``, ``raydiff.node``):
    e.g. "4 configs retried: 4 resumed from a checkpoint (epochs 200-400), 0 started
    over; last on 10.0.0.10". Empty when nothing was retried."""
    again = [r for r in runs if r.data.tags.get(tracking.TAG_STAGE) == stage
             and r.data.tags.get("raydiff.retried") == "true"]
    if not again:
        return ""
    epochs = sorted(int(r.data.tags["raydiff.resumed_from_epoch"]) for r in again
                    if "raydiff.resumed_from_epoch" in r.data.tags)
    over = len(again) - len(epochs)
    span = "" if not epochs else (f" (epoch {epochs[0]})" if epochs[0] == epochs[-1]
                                  else f" (epochs {epochs[0]}-{epochs[-1]})")
    nodes = sorted({r.data.tags.get("raydiff.node", "?") for r in again})
    return (f"{len(again)} {'config' if len(again) == 1 else 'configs'} retried: "
            f"{len(epochs)} resumed from a checkpoint{span}, {over} started over; "
            f"finished on {', '.join(nodes)}")


def _alive_hosts():
    """The addresses of the cluster's live nodes."""
    return sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")})


def hosts_summary(runs, stage, hosts):
    """Where the finished configs of ``stage`` ran, from their runs' ``raydiff.node`` tags,
    on a cluster of more than one host: e.g. "ran on 10.0.0.1: 33, 10.0.0.2: 9"; a live
    host that ran none shows 0 (Tune gives a pending trial to an actor that has just
    finished, so trials shorter than a worker's start may all run where actors are warm).
    Empty on one host."""
    placed = collections.Counter(r.data.tags["raydiff.node"] for r in runs
                                 if r.data.tags.get(tracking.TAG_STAGE) == stage
                                 and r.info.status == "FINISHED"
                                 and "raydiff.node" in r.data.tags)
    every = sorted(set(hosts) | set(placed))
    if len(every) < 2:
        return ""
    return "ran on " + ", ".join(f"{h}: {placed.get(h, 0)}" for h in every)


def _packed_specs(stage, specs, keys, datasets):
    """The stage's trial specs with its packable configs grouped into packs
    (:mod:`raydiff.tune.packs`); a group of one stays the plain spec it was."""
    module = stage.module
    if stage.pack == 1 or not packs.can_pack(module):
        return specs
    configs = [sweeps.resolved(stage, s.config) for s in specs]
    shape = None
    if configs and getattr(module, "NEEDS_DATA", True):
        ds = datasets.get(data_key(configs[0]))
        if ds is not None:
            n = len(ds.y) if not configs[0].get("subset_size") else min(
                len(ds.y), int(configs[0]["subset_size"]))
            d = 1
            for size in ds.x.shape[1:]:
                d *= int(size)
            shape = (n, d, int(ds.num_classes))
    groups = packs.make_packs(specs, module, configs, stage.pack,
                              resources=stage.resources, shape=shape, slots=_slots(stage))
    short = describe.short_names(keys)
    label = describe.stage_label(stage)
    return [specs[g[0]] if len(g) == 1 else
            packs.pack_spec(label, [specs[i] for i in g], {k: short[k] for k in keys})
            for g in groups]


def _slots(stage):
    """How many trials of ``stage`` the cluster runs at once, by its resources."""
    have = ray.cluster_resources()
    need_gpu, need_cpu = stage.resources.get("gpu") or 0, stage.resources.get("cpu") or 1
    if need_gpu:
        return max(1, int(have.get("GPU", 0) / need_gpu))
    return max(1, int(have.get("CPU", 1) / need_cpu))


def _finished(stage, result):
    """([TrialRecord] of the configs of one Tune result whose run FINISHED, how many
    failed): a finished config is an upstream of later stages; a pack's result names the
    run of each of its configs (``pack_runs``, None for a failed one)."""
    spec, metrics = from_tune(result.config), result.metrics or {}
    if packs.is_pack(spec):
        runs = list(metrics.get("pack_runs") or [])
        runs += [None] * (len(spec.configs) - len(runs))
        done = [TrialRecord(stage.name, stage.experiment, sweeps.resolved(stage, c.config),
                            dict(c.params), run_id)
                for c, run_id in zip(spec.configs, runs) if run_id]
        return done, len(spec.configs) - len(done)
    run_id = metrics.get("mlflow_run_id")
    if result.error is not None or not run_id:
        return [], 1
    drawn = {k: v for k, v in result.config.items() if k != "trial"}
    return [TrialRecord(stage.name, stage.experiment,
                        sweeps.resolved(stage, {**spec.config, **drawn}),
                        {**spec.params, **drawn}, run_id)], 0


def _tune_files():
    """Tune's own per-trial files: its result log (``result.json``, ``progress.csv``),
    read by Tune's ``ExperimentAnalysis``; not TensorBoard's event files (MLflow holds
    every metric, and TensorBoard cannot log a pack's list of run ids).
    ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS`` (set above) keeps Tune from adding it back."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    return [CSVLoggerCallback(), JsonLoggerCallback()]
