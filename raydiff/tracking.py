"""The one module that talks to MLflow.

Every trial is one MLflow run, created through the client with explicit run ids (no
fluent, process-global "active run"), found again by its Tune trial id when the trial is
retried or resumed, so a trial never leaves two runs or a run stuck in RUNNING.

Under load (a cluster's 128 trials logging at once) the store answers some calls with an
error that goes away by itself: a server out of database connections ("QueuePool limit"),
429, 5xx, a connection refused or reset, SQLite's "database is locked". Such calls are
retried with exponential backoff and full jitter (so that many trials do not come back in
step) for up to ``RAYDIFF_TRACKING_RETRY_S``; any other error is raised at once. Metrics
are buffered per run and sent in a few large batches (every ``RAYDIFF_TRACKING_FLUSH_S``,
and always before the run is ended), which is most of what a trial sends.
"""

import atexit
import fcntl
import json
import os
import random
import re
import threading
import time
import urllib.request
from pathlib import Path

import pandas as pd

# The Tracker owns retrying (with jitter, counted, printed); MLflow's own HTTP retries
# (7, up to minutes, silent) would stack under it. Set before mlflow reads it.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException, RestException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

# a trial downloading its upstream's artifacts would print a progress bar per file,
# through Ray, to the driver's terminal
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

DEFAULT_URI = "sqlite:///mlflow.db"
TAG_SWEEP, TAG_EXPERIMENT, TAG_TRIAL = "raydiff.sweep", "raydiff.experiment", "raydiff.trial_id"
TAG_STAGE, TAG_SESSION, TAG_KIND, TAG_PARAMS = ("raydiff.stage", "raydiff.session",
                                                "raydiff.kind", "raydiff.params")
TAG_PARENT = "mlflow.parentRunId"       # the UI folds a run under this one
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"     # a model-training experiment, not GenAI
RETRY_SECONDS = float(os.environ.get("RAYDIFF_TRACKING_RETRY_S", "120"))
FLUSH_SECONDS = float(os.environ.get("RAYDIFF_TRACKING_FLUSH_S", "5"))
BATCH_METRICS = 1000            # MLflow's limit of metrics per log_batch call

class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says why and what to do."""


def resolve_uri(uri=None):
    """The tracking URI to use, made absolute so that Ray workers in other folders agree.

    Default: ``sqlite:///mlflow.db`` in the working folder. The old ``./mlruns`` file
    store is refused by MLflow 3 and so here, with the fix in the message.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    if uri.startswith("file:") or "://" not in uri:
        raise TrackingError(f"tracking URI {uri!r} is a file store, which MLflow 3 refuses; "
                            f"use {DEFAULT_URI} (the default) or http://HOST:PORT of an mlflow server")
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).absolute())
    return uri


# error codes a server or store gives for a state that passes
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED",
                    "DEADLINE_EXCEEDED", "SERVICE_UNDER_MAINTENANCE", "ABORTED"}
# ... and the words of such states, wherever they surface (a 400 from the server's
# connection pool, a driver error, a wrapped requests/urllib3 exception)
_TRANSIENT_TEXT = re.compile(
    r"queuepool limit|database is locked|database table is locked|too many clients"
    r"|could not connect|server closed the connection|connection (refused|reset|aborted)"
    r"|remotedisconnected|max retries exceeded|broken pipe|timed out|read timeout"
    r"|temporarily unavailable|error code (408|429|5\d\d)\b", re.IGNORECASE)

retry_count = 0          # retries made by this process (the load benchmark reports it)


def transient(exc):
    """Whether ``exc`` from a tracking call is worth retrying: the store is overloaded or
    briefly away (429, 5xx, "QueuePool limit", "database is locked", a connection refused,
    reset or timed out). Anything else (a bad value, a missing run, a 4xx) is permanent."""
    if isinstance(exc, (ConnectionError, TimeoutError)):       # refused, reset, broken pipe
        return True
    if isinstance(exc, RestException):          # the server answered with an error
        status = exc.get_http_status_code()
        if status in (408, 429) or status >= 500:
            return True
    if isinstance(exc, MlflowException) and exc.error_code in _TRANSIENT_CODES:
        return True
    if type(exc).__name__ in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout"):
        return True                              # requests' exceptions, not builtins
    return bool(_TRANSIENT_TEXT.search(f"{exc}"))


def backoff(attempt, *, base=0.5, cap=10.0, rng=random):
    """Seconds to wait before retry ``attempt`` (0, 1, ...): "full jitter", uniform in
    [0, min(cap, base * 2**attempt)], so that callers who failed together spread out."""
    return rng.uniform(0.0, min(cap, base * 2 ** attempt))


def retrying(fn, *args, what="MLflow call", seconds=None, **kwargs):
    """Call ``fn``; retry it while it fails with a :func:`transient` error, with
    :func:`backoff`, until ``seconds`` (default RAYDIFF_TRACKING_RETRY_S) have passed.
    A permanent error, or a transient one past the deadline, is raised."""
    global retry_count
    deadline = time.monotonic() + (RETRY_SECONDS if seconds is None else seconds)
    attempt = 0
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the store's errors are many and untyped
            delay = max(0.05, backoff(attempt))
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            retry_count += 1
            attempt += 1
            print(f"raydiff: {what} failed ({type(exc).__name__}: {str(exc)[:200]}); "
                  f"retrying in {delay:.1f}s", flush=True)
            time.sleep(delay)


class Tracker:
    """MLflow access for one tracking URI.

    Metrics given to :meth:`log_metrics` are buffered per run and sent once the oldest
    unsent point is ``flush_seconds`` old, on :meth:`flush` (before a checkpoint), before
    :meth:`end` closes the run, and when the process exits normally.
    """

    def __init__(self, uri=None, *, flush_seconds=None):
        self.uri = resolve_uri(uri)
        self.flush_seconds = FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self._buffer = {}          # run id -> [Metric] not yet sent
        self._oldest = {}          # run id -> monotonic time its oldest unsent point came
        self._lock = threading.Lock()
        if self.uri.startswith("sqlite:///"):
            self.client = self._open_sqlite()
        else:
            self.client = MlflowClient(tracking_uri=self.uri)
        atexit.register(self._flush_at_exit)

    def _open_sqlite(self):
        """A client of the SQLite store, which is created if new while a lock on its folder
        is held: MLflow's table creation fails when several processes create one store at
        once (the trials of a sweep, the workers of `mlflow server`)."""
        folder = Path(self.uri[len("sqlite:///"):]).parent
        try:
            fd = os.open(folder, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                client = MlflowClient(tracking_uri=self.uri)
                client.search_experiments(max_results=1)
                return client
            finally:
                os.close(fd)
        except Exception as exc:  # noqa: BLE001
            raise TrackingError(f"the tracking store {self.uri} cannot be opened: {exc}") from None

    # -- start-up ------------------------------------------------------------------------
    def check(self, timeout=5.0):
        """Fail at once, with the fix, if the store cannot be reached."""
        if self.uri.startswith(("http://", "https://")):
            try:
                with urllib.request.urlopen(self.uri.rstrip("/") + "/health", timeout=timeout):
                    pass
            except OSError as exc:
                raise TrackingError(
                    f"the MLflow server at {self.uri} is unreachable ({exc}); start it (e.g. "
                    f"`mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
                    f"sqlite:///mlflow.db`) or pass another --tracking-uri") from None
        else:
            try:
                self.client.search_experiments(max_results=1)
            except Exception as exc:  # noqa: BLE001
                raise TrackingError(f"the tracking store {self.uri} cannot be opened: {exc}") from None

    def experiment_id(self, name):
        """Id of the MLflow experiment ``name``, created (on the driver) if missing."""
        found = retrying(self.client.get_experiment_by_name, name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                retrying(self.client.restore_experiment, found.experiment_id)
            if found.tags.get(TAG_EXPERIMENT_KIND) != TRAINING_KIND:   # made by an older raydiff
                self.mark_training(found.experiment_id)
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):
            root = Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts"
            location = (root / name).as_uri()
        return retrying(self.client.create_experiment, name, artifact_location=location,
                        tags={TAG_EXPERIMENT_KIND: TRAINING_KIND})

    def mark_training(self, experiment_id):
        """Tag an experiment as model training, so MLflow's UI treats it as runs, not traces."""
        retrying(self.client.set_experiment_tag, experiment_id, TAG_EXPERIMENT_KIND,
                 TRAINING_KIND)

    def mark_all_training(self):
        """Tag every experiment of the store that lacks the kind (but the Default one)."""
        marked = []
        for exp in retrying(self.client.search_experiments, max_results=50000):
            if exp.name != "Default" and exp.tags.get(TAG_EXPERIMENT_KIND) is None:
                self.mark_training(exp.experiment_id)
                marked.append(exp.name)
        return marked

    def runs_page(self, name, base_url):
        """URL of the runs table of experiment ``name`` in an MLflow UI at ``base_url``
        (MLflow 3 opens an experiment on its GenAI pages unless the URL says otherwise);
        the UI's root when the experiment does not exist."""
        found = retrying(self.client.get_experiment_by_name, name)
        if found is None:
            return base_url.rstrip("/") + "/"
        return (f"{base_url.rstrip('/')}/#/experiments/{found.experiment_id}"
                f"?workflowType=machine_learning")

    def share_first_view(self, name, base_url, *, session, stages, params, main_metrics,
                         metrics, charts):
        """Store the first view of ``session`` of experiment ``name`` as one of MLflow's
        shared views and return its URL in the UI at ``base_url`` (None when the
        experiment does not exist).

        A shared view is an experiment tag ``mlflow.sharedViewState.<key>`` holding the
        runs page's state as JSON, which the UI applies when its runs route says
        ``?viewStateShareKey=<key>``. This one holds the session's trial runs only (the one
        way to filter from a URL: MLflow 3.17 ignores ``searchFilter`` in it), grouped by
        stage when ``stages`` holds more than one, sorted by name, with the
        ``main_metrics``, ``params`` and ``metrics`` columns in that order, and ``charts``
        ({"stage", "x" param, "y" metric}) as scatter plots on the page's chart view
        (``&compareRunsMode=CHART``). The key is the session's, so a URL keeps showing the
        session it was made for."""
        found = retrying(self.client.get_experiment_by_name, name)
        if found is None:
            return None
        key = f"raydiff-{session}"
        state = _view_state(session, params, main_metrics, metrics, charts,
                            grouped=len(stages) > 1)
        retrying(self.client.set_experiment_tag, found.experiment_id, VIEW_TAG_PREFIX + key,
                 json.dumps(state, separators=(",", ":")), what="storing the first view")
        # the runs route itself: the experiment's bare route redirects there and drops
        # the share key on the way (Chromium, MLflow 3.17)
        return (f"{base_url.rstrip('/')}/#/experiments/{found.experiment_id}/runs"
                f"?viewStateShareKey={key}&workflowType=machine_learning")

    # -- grouping runs -------------------------------------------------------------------
    def group_run(self, experiment_id, *, kind, sweep, session, name, stage=None,
                  parent=None, params=None, tags=None, reopen=True):
        """The parent run of a session (``kind="session"``) or of one stage of a session
        (``kind="stage"``), created once: a resumed session finds it again (and sets it
        RUNNING), so re-running never duplicates it. Returns its run id. ``reopen=False``
        (a report of a session) leaves a found run as it is and closes a new one."""
        query = (f"tags.`{TAG_KIND}` = '{kind}' and tags.`{TAG_SESSION}` = '{session}'"
                 + (f" and tags.`{TAG_STAGE}` = '{stage}'" if stage else ""))
        found = retrying(self.client.search_runs, [experiment_id], query, max_results=1)
        if found:
            run_id = found[0].info.run_id
            if reopen and found[0].info.status != "RUNNING":
                retrying(self.client.update_run, run_id, status="RUNNING")
            return run_id
        all_tags = {TAG_KIND: kind, TAG_SWEEP: sweep, TAG_SESSION: session, **(tags or {})}
        if stage:
            all_tags[TAG_STAGE] = stage
        if parent:
            all_tags[TAG_PARENT] = parent
        run = retrying(self.client.create_run, experiment_id, run_name=name, tags=all_tags)
        flat = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        for i in range(0, len(flat), 100):
            retrying(self.client.log_batch, run.info.run_id, params=flat[i:i + 100])
        if not reopen:
            self.end(run.info.run_id)
        return run.info.run_id

    def session_run(self, experiment_id, sweep, session, *, reopen=True):
        """The parent run of a whole session (stages and the report sit under it)."""
        return self.group_run(experiment_id, kind="session", sweep=sweep, session=session,
                              name=f"{sweep} {session}", reopen=reopen)

    # -- datasets ------------------------------------------------------------------------
    def log_training_data(self, run_id, *, name, digest, num_rows, properties):
        """Log a trial's training data as an MLflow dataset input (the UI's Dataset
        column): ``name`` and ``digest`` (equal digests = the same samples with the same
        labels), the row count and ``properties`` (noise ratio and kind, ...) as profile."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        schema = {"mlflow_colspec": [{"type": "long", "name": "sample_id", "required": True},
                                     {"type": "long", "name": "observed_label", "required": True}]}
        dataset = Dataset(name=name, digest=digest, source_type="raydiff",
                          source=json.dumps({"dataset": name, **properties}, default=str),
                          schema=json.dumps(schema),
                          profile=json.dumps({"num_rows": num_rows, **properties}, default=str))
        retrying(self.client.log_inputs, run_id,
                 datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train")])],
                 what="logging the dataset input")

    # -- trial runs ----------------------------------------------------------------------
    def trial_run(self, experiment_id, *, stage, trial_id, run_name, params, tags, parent=None):
        """The run of Tune trial ``trial_id`` of stage ``stage``: ``(run_id, status)``.

        A trial that is retried or resumed finds its earlier run (same trial id, session
        and stage): a FINISHED one is
        returned as it is (the caller skips the work), any other is set RUNNING again.
        Otherwise a new run is created with ``params`` and ``tags``, nested under the
        run ``parent`` when given; status "NEW".
        """
        # Tune's trial ids are only unique within one Tuner: two stages started in the
        # same instant draw the same prefix, so the stage is part of the key
        tags = {**tags, TAG_STAGE: stage}
        query = (f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`{TAG_SESSION}` = '{tags[TAG_SESSION]}'"
                 f" and tags.`{TAG_STAGE}` = '{stage}'")
        all_tags = {**tags, TAG_TRIAL: trial_id, **({TAG_PARENT: parent} if parent else {}),
                    TAG_PARAMS: json.dumps(params, sort_keys=True, default=str)}

        tried = []

        def find_or_create():
            # one attempt = look, then create: a create whose answer was lost (the server
            # timed out after committing) is found on the retry, not made twice, and is
            # still this call's new run
            found = self.client.search_runs([experiment_id], query, max_results=1)
            if found:
                return found[0], bool(tried)
            tried.append(True)
            return self.client.create_run(experiment_id, run_name=run_name, tags=all_tags), True

        run, created = retrying(find_or_create, what="opening the trial's run")
        if not created:
            if run.info.status != "FINISHED":
                retrying(self.client.update_run, run.info.run_id, status="RUNNING")
            return run.info.run_id, run.info.status
        flat = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(flat), 100):
            retrying(self.client.log_batch, run.info.run_id, params=flat[i:i + 100])
        return run.info.run_id, "NEW"

    def final_metrics(self, run_id):
        return dict(retrying(self.client.get_run, run_id).data.metrics)

    def log_metrics(self, run_id, rows):
        """Buffer ``rows`` (list of (key, value, step, timestamp_ms)) for run ``run_id``;
        the buffer is sent when its oldest point is ``flush_seconds`` old."""
        metrics = [Metric(k, float(v), int(ts), int(step or 0)) for k, v, step, ts in rows]
        with self._lock:
            self._buffer.setdefault(run_id, []).extend(metrics)
            self._oldest.setdefault(run_id, time.monotonic())
            due = time.monotonic() - self._oldest[run_id] >= self.flush_seconds
        if due:
            self.flush(run_id)

    def pending(self, run_id=None):
        """Number of buffered, unsent metric points (of ``run_id``, or of every run)."""
        with self._lock:
            return sum(len(v) for k, v in self._buffer.items() if run_id in (None, k))

    def flush(self, run_id=None):
        """Send the buffered metrics of ``run_id`` (of every run when None), in batches of
        up to 1,000 points. Points a failed batch held stay buffered for the next flush."""
        for rid in ([run_id] if run_id is not None else list(self._buffer)):
            with self._lock:
                metrics = self._buffer.pop(rid, [])
                self._oldest.pop(rid, None)
            for i in range(0, len(metrics), BATCH_METRICS):
                try:
                    # MLflow stores a point once: a batch retried after a lost answer adds nothing
                    retrying(self.client.log_batch, rid, metrics=metrics[i:i + BATCH_METRICS],
                             what="logging metrics")
                except BaseException:
                    with self._lock:
                        self._buffer[rid] = metrics[i:] + self._buffer.get(rid, [])
                        self._oldest.setdefault(rid, time.monotonic())
                    raise

    def _flush_at_exit(self):
        if self.pending():
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the process is ending: say so, go on
                print(f"raydiff: {self.pending()} metric points could not be sent at exit: "
                      f"{exc}", flush=True)

    def set_tags(self, run_id, tags):
        retrying(self.client.log_batch, run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id, path, artifact_path=None):
        retrying(self.client.log_artifact, run_id, str(path), artifact_path,
                 what=f"uploading {Path(path).name}")

    def end(self, run_id, status="FINISHED"):
        """Send the run's buffered metrics, then close it as ``status``. The run is closed
        even when its metrics cannot be sent (then FAILED, and the error is raised), so no
        run is left RUNNING by a tracker that could still reach the store."""
        try:
            self.flush(run_id)
        except Exception:
            retrying(self.client.set_terminated, run_id, "FAILED")
            raise
        retrying(self.client.set_terminated, run_id, status)

    def download(self, run_id, dst, path=""):
        """Download the artifacts of ``run_id`` (all, or ``path``) into ``dst``; the local path."""
        Path(dst).mkdir(parents=True, exist_ok=True)
        return Path(retrying(mlflow.artifacts.download_artifacts, run_id=run_id,
                             artifact_path=path or None, dst_path=str(dst),
                             tracking_uri=self.uri, what="downloading artifacts"))

    def history(self, run_id, key):
        hist = retrying(self.client.get_metric_history, run_id, key)
        return pd.DataFrame({"step": [m.step for m in hist], "value": [m.value for m in hist]})

    # -- sweeps --------------------------------------------------------------------------
    def runs(self, sweep, *, kind="trial", session="latest"):
        """Runs of ``sweep`` as mlflow Run objects (of the latest session by default)."""
        exp = retrying(self.client.get_experiment_by_name, sweep)
        if exp is None:
            return []
        query = f"tags.`{TAG_KIND}` = '{kind}'"
        runs = retrying(self.client.search_runs, [exp.experiment_id], query,
                        max_results=50000, order_by=["attributes.start_time DESC"])
        if session == "latest" and runs:
            session = max(r.data.tags.get(TAG_SESSION, "") for r in runs)
        if session not in (None, "all"):
            runs = [r for r in runs if r.data.tags.get(TAG_SESSION) == session]
        return runs

    def close_stale(self, sweep, session, *, status="KILLED", stage=None):
        """Mark runs of ``session`` (of ``stage`` only, when given: other stages may still
        be running) still RUNNING (their trial process died) as ``status``."""
        closed = []
        for run in self.runs(sweep, session=session):
            if stage is not None and run.data.tags.get(TAG_STAGE) != stage:
                continue
            if run.info.status == "RUNNING":
                self.end(run.info.run_id, status)
                closed.append(run.info.run_id)
        return closed


VIEW_TAG_PREFIX = "mlflow.sharedViewState."     # the UI's shared views live in these tags


def _column(kind, key):
    """A runs-table column as the UI names it: ``params.`lr```, ``metrics.`acc```."""
    return f"{kind}.`{key}`"


def _view_state(session, params, main_metrics, metrics, charts, *, grouped):
    """The runs page state of MLflow 3.17's UI (the fields its shared views read: search
    facets, columns, grouping, charts) for the first view of ``session``."""
    section = "raydiff-first-view"
    name, dataset = _column("attributes", "Run Name"), _column("attributes", "Dataset")
    swept = [_column("params", k) for k in params]
    main = [_column("metrics", k) for k in main_metrics]
    others = [_column("metrics", k) for k in metrics]
    return {
        "searchFilter": f"tags.`{TAG_SESSION}` = '{session}' and tags.`{TAG_KIND}` = 'trial'",
        "orderByKey": "tags.`mlflow.runName`", "orderByAsc": True,
        "selectedColumns": [dataset, *swept, *main, *others],
        # the table draws only the columns in view: the name, the main metrics and the
        # swept keys first, the other metrics, the dataset and the duration after them
        "columnOrder": [name, "runDateAndNestInfo", *main, *swept, *others, dataset,
                        "duration"],
        "columnWidths": {name: 290, "runDateAndNestInfo": 120,
                         **{c: 120 for c in main + others}, **{c: 100 for c in swept}},
        # one group per stage, open; its header row averages the stage's runs
        "groupBy": ({"aggregateFunction": "average",
                     "groupByKeys": [{"mode": "tag", "groupByData": TAG_STAGE}]}
                    if grouped else None),
        "groupsExpanded": {},
        "runsHiddenMode": "SHOW_ALL",          # every run in the charts, not the first 10
        "useGroupedValuesInCharts": False,     # a point per run, not per stage
        "hideEmptyCharts": True,
        "compareRunSections": [{"uuid": section, "name": "raydiff: main metric over the swept axis",
                                "display": True, "isReordered": False, "deleted": False,
                                "isGenerated": False}],
        "compareRunCharts": [
            {"uuid": f"raydiff-{i}", "type": "SCATTER", "runsCountToCompare": 1000,
             "metricSectionId": section, "deleted": False, "isGenerated": False,
             "displayName": f"{c['stage']}: {c['y']} over {c['x']}",
             "xaxis": {"key": c["x"], "type": "PARAM"},
             "yaxis": {"key": c["y"], "type": "METRIC"}}
            for i, c in enumerate(charts)],
        "isAccordionReordered": True,          # keep this section first, as stored
    }


def runs_table(runs):
    """Tidy DataFrame of trial runs: ids, stage, experiment, status, trial seconds, typed
    params (from the JSON tag) and final metrics as ``m.<key>``."""
    rows = []
    for run in runs:
        tags = run.data.tags
        row = {"run_id": run.info.run_id, "status": run.info.status,
               "stage": tags.get(TAG_STAGE), "experiment": tags.get(TAG_EXPERIMENT),
               "session": tags.get(TAG_SESSION), "start_time": run.info.start_time,
               "trial_seconds": ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000}
        row.update(json.loads(tags.get(TAG_PARAMS, "{}")))
        row.update({f"m.{k}": v for k, v in run.data.metrics.items()})
        if "m.trial_seconds" in row:     # time inside the experiment, without queueing
            row["trial_seconds"] = row["m.trial_seconds"]
        rows.append(row)
    return pd.DataFrame(rows)
