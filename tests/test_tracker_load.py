"""The Tracker under load: which errors it retries and how, and that buffered metrics all
arrive. In-process, on a SQLite store made by the test (seconds)."""

import random

import pytest
from mlflow.exceptions import MlflowException, RestException
from requests.exceptions import ConnectionError as RequestsConnectionError

from raydiff import tracking

QUEUEPOOL = ("(sqlalchemy.exc.TimeoutError) QueuePool limit of size 5 overflow 10 reached, "
             "connection timed out, timeout 30.00")


def _rest(code, message):
    return RestException({"error_code": code, "message": message})


TRANSIENT = [
    _rest("BAD_REQUEST", QUEUEPOOL),                                  # the server's pool, 400
    _rest("TEMPORARILY_UNAVAILABLE", "(sqlite3.OperationalError) database is locked"),
    _rest("REQUEST_LIMIT_EXCEEDED", "slow down"),                     # 429
    _rest("INTERNAL_ERROR", "worker crashed"),                        # 500 from the server
    MlflowException("API request to http://h:5000/api/2.0/mlflow/runs/log-batch failed with "
                    "error code 502 != 200. Response body: 'Bad Gateway'"),
    MlflowException("API request to http://h:5000/x failed with exception HTTPConnectionPool("
                    "host='h', port=5000): Max retries exceeded with url: /x (Caused by "
                    "NewConnectionError('Failed to establish a new connection: [Errno 111] "
                    "Connection refused'))"),
    RequestsConnectionError("('Connection aborted.', RemoteDisconnected('closed'))"),
    ConnectionResetError(104, "Connection reset by peer"),
    MlflowException("(sqlite3.OperationalError) database is locked",
                    error_code="TEMPORARILY_UNAVAILABLE"),
]
PERMANENT = [
    _rest("INVALID_PARAMETER_VALUE", "Invalid value 'x' for parameter 'lr'"),
    _rest("RESOURCE_DOES_NOT_EXIST", "Run 'abc' not found"),
    _rest("PERMISSION_DENIED", "no"),
    MlflowException("Changing param values is not allowed. Param with key='lr' was already "
                    "logged with value='0.1'", error_code="INVALID_PARAMETER_VALUE"),
    ValueError("could not convert string to float: 'nan?'"),
    KeyError("run_id"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: f"{type(e).__name__}:{str(e)[:40]}")
def test_overload_and_outage_errors_are_transient(exc):
    assert tracking.transient(exc)


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: f"{type(e).__name__}:{str(e)[:40]}")
def test_bad_requests_are_permanent(exc):
    assert not tracking.transient(exc)


@pytest.fixture
def no_sleep(monkeypatch):
    slept = []
    monkeypatch.setattr(tracking.time, "sleep", slept.append)
    return slept


def _failing(errors, result="ok"):
    calls = []

    def fn(*args, **kwargs):
        calls.append(args)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result
    return fn, calls


def test_a_transient_error_is_retried_with_growing_jittered_waits(no_sleep, capsys):
    before = tracking.retry_count
    fn, calls = _failing([_rest("BAD_REQUEST", QUEUEPOOL)] * 4)
    assert tracking.retrying(fn, 1, what="logging metrics") == "ok"
    assert len(calls) == 5 and tracking.retry_count - before == 4
    assert len(no_sleep) == 4
    # each wait within its exponential bound (full jitter: anywhere below it)
    assert all(0 < s <= max(0.05, 0.5 * 2 ** i) for i, s in enumerate(no_sleep))
    assert capsys.readouterr().out.count("logging metrics failed") == 4


def test_a_permanent_error_is_raised_at_once(no_sleep):
    fn, calls = _failing([_rest("INVALID_PARAMETER_VALUE", "Invalid value")])
    with pytest.raises(RestException, match="Invalid value"):
        tracking.retrying(fn)
    assert len(calls) == 1 and no_sleep == []


def test_a_transient_error_past_the_deadline_is_raised(no_sleep):
    fn, calls = _failing([ConnectionRefusedError("refused")] * 100)
    with pytest.raises(ConnectionRefusedError):
        tracking.retrying(fn, seconds=0.0)
    assert len(calls) == 1


def test_backoff_spreads_callers_and_is_capped():
    rng = random.Random(0)
    waits = [tracking.backoff(3, rng=rng) for _ in range(200)]
    assert max(waits) <= 0.5 * 2 ** 3 and min(waits) >= 0
    assert len({round(w, 3) for w in waits}) > 150       # spread, not in step
    assert max(tracking.backoff(20, rng=rng) for _ in range(200)) <= 10.0


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    # one store for the module: making one costs seconds
    folder = tmp_path_factory.mktemp("store")
    return tracking.Tracker(f"sqlite:///{folder / 'mlflow.db'}", flush_seconds=3600)


@pytest.fixture
def store(tracker, request):
    tracker.flush_seconds = 3600
    exp = tracker.experiment_id("load")
    run_id, status = tracker.trial_run(exp, stage="s", trial_id=request.node.name,
                                       run_name="r", params={"lr": 0.1},
                                       tags={tracking.TAG_SESSION: "x"})
    assert status == "NEW"
    return tracker, run_id


def _points(tracker, run_id, keys):
    return {k: sorted(m.step for m in tracker.client.get_metric_history(run_id, k)) for k in keys}


def test_buffered_metrics_are_all_sent_in_one_batch_when_the_run_ends(store, monkeypatch):
    tracker, run_id = store
    batches = []
    real = tracker.client.log_batch
    monkeypatch.setattr(tracker.client, "log_batch",
                        lambda rid, **kw: (batches.append(len(kw.get("metrics") or [])),
                                           real(rid, **kw))[1])
    keys = [f"m{k}" for k in range(5)]
    for epoch in range(30):
        tracker.log_metrics(run_id, [(k, epoch + i, epoch, 1000 + epoch) for i, k in enumerate(keys)])
    assert tracker.pending(run_id) == 150
    assert _points(tracker, run_id, keys) == {k: [] for k in keys}     # nothing sent yet
    tracker.end(run_id)
    assert tracker.pending(run_id) == 0 and batches == [150]           # one batch, not 30
    assert _points(tracker, run_id, keys) == {k: list(range(30)) for k in keys}
    assert tracker.client.get_run(run_id).info.status == "FINISHED"


def test_metrics_older_than_the_flush_interval_go_out_with_the_next_call(store):
    tracker, run_id = store
    tracker.flush_seconds = 0.0
    tracker.log_metrics(run_id, [("loss", 0.5, 1, 1000)])
    assert tracker.pending(run_id) == 0
    assert _points(tracker, run_id, ["loss"]) == {"loss": [1]}


def test_a_run_whose_metrics_cannot_be_sent_is_closed_failed_not_left_running(store, monkeypatch):
    tracker, run_id = store
    tracker.log_metrics(run_id, [("loss", float("nan"), 1, 1000), ("bad", 1.0, 1, 1000)])
    real = tracker.client.log_batch

    def refuse(rid, **kw):
        if kw.get("metrics"):
            raise _rest("INVALID_PARAMETER_VALUE", "metric refused")
        return real(rid, **kw)
    monkeypatch.setattr(tracker.client, "log_batch", refuse)
    with pytest.raises(RestException, match="metric refused"):
        tracker.end(run_id)
    assert tracker.client.get_run(run_id).info.status == "FAILED"
    assert tracker.pending(run_id) == 2          # kept: a later flush may still send them


def test_a_create_whose_answer_was_lost_is_not_made_twice(store, no_sleep, monkeypatch):
    """The server committed the new run but the answer timed out: the retry finds it."""
    tracker, _ = store
    exp = tracker.experiment_id("load")
    real = tracker.client.create_run
    lost = []

    def create_then_time_out(*args, **kwargs):
        run = real(*args, **kwargs)
        if not lost:
            lost.append(run.info.run_id)
            raise TimeoutError("read timed out")
        return run
    monkeypatch.setattr(tracker.client, "create_run", create_then_time_out)
    run_id, status = tracker.trial_run(exp, stage="s", trial_id="t1", run_name="r1",
                                       params={"lr": 0.2}, tags={tracking.TAG_SESSION: "x"})
    assert lost == [run_id] and status == "NEW"
    runs = tracker.client.search_runs([exp], f"tags.`{tracking.TAG_TRIAL}` = 't1'")
    assert len(runs) == 1 and runs[0].data.params == {"lr": "0.2"}     # and its params
