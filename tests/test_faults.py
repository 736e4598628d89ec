"""Faults a sweep meets on a cluster, each struck for real: processes killed, the tracking
server gone, checkpoints corrupted. The driver-killed-and-resumed case is in
test_end_to_end.py."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import RAYDIFF
from procs import MlflowServer, Proc, base_env, free_port, wait_until
from raydiff import tracking

SMALL = {"name": "faults", "experiment": "train_classifier", "resources": {"cpu": 1},
         "config": {"dataset": "blobs", "epochs": 5, "seed": {"grid": [0, 1]}}}


def test_unreachable_tracking_server_refused_at_once_before_ray(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SMALL))
    uri = f"http://127.0.0.1:{free_port()}"           # nothing listens there
    script = ("import json, sys, time\nfrom raydiff.cli import main\nt = time.monotonic()\n"
              f"code = main(['run', 's.yaml', '--tracking-uri', '{uri}'])\n"
              "print(json.dumps({'code': code, 'seconds': time.monotonic() - t,"
              " 'ray': 'ray' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 2 and not result["ray"], done.stderr[-2000:]
    assert "retrying" not in done.stdout + done.stderr   # refused at once, not retried
    print(f"refused in {result['seconds']:.1f} s (imports included)")
    assert f"the MLflow server at {uri} is unreachable" in done.stderr
    assert "mlflow server --host 127.0.0.1" in done.stderr      # and how to start one
    assert not (tmp_path / "ray_results").exists()


def _open_store(uri, barrier, results):
    barrier.wait()
    try:
        tracking.Tracker(uri)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001
        results.put(f"{type(exc).__name__}: {exc}"[:200])


def test_many_processes_create_a_new_store_at_once(tmp_path):
    """The trials of a sweep (or a server's workers) opening one new SQLite store together:
    MLflow's own table creation races and fails; the tracker takes a lock."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [ctx.Process(target=_open_store, args=(uri, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4
    assert tracking.Tracker(uri).client.search_experiments()      # a usable store


# -- faults struck at a running sweep (real Ray, real processes) ------------------------

EPOCHS, EVERY = 30, 10
PACED = {"name": "faults", "experiment": "train_classifier", "resources": {"cpu": 1},
         "max_failures": 2,
         "config": {"dataset": "blobs", "noise_ratio": 0.2, "hidden": [16], "epochs": EPOCHS,
                    "checkpoint_every": EVERY, "epoch_seconds": 0.5,
                    "seed": {"grid": [0, 1]}}}


def _trial_runs(client, name):
    exp = tracking.retrying(client.get_experiment_by_name, name)
    if exp is None:
        return []
    return tracking.retrying(client.search_runs, [exp.experiment_id],
                             "tags.`raydiff.kind` = 'trial'")


def _last_step(client, run):
    return max((m.step for m in tracking.retrying(client.get_metric_history,
                                                  run.info.run_id, "loss")), default=0)


def _strike(client, name, seeds, step, proc, action, timeout=400):
    """Run ``action(run)`` on the trial run of each of ``seeds`` once it has logged an
    epoch past ``step``; returns {seed: the run as it was struck}."""
    struck = {}

    def check():
        for run in _trial_runs(client, name):
            if "raydiff.pid" not in run.data.tags:      # set after the params: not yet going
                continue
            seed = int(run.data.params["seed"])
            if seed in seeds and seed not in struck and _last_step(client, run) > step:
                assert run.info.status == "RUNNING", "the trial finished before the fault"
                action(run)
                struck[seed] = run
        return len(struck) == len(seeds)

    wait_until(check, timeout, f"trials past epoch {step}", every=0.3, proc=proc)
    return struck


def _driver(tmp_path, *extra, env=None):
    return Proc(RAYDIFF + ["run", "s.yaml", "--num-cpus", "2", "--no-dashboard", *extra],
                log=tmp_path / "driver.log", cwd=tmp_path, env=env)


def _checkpoints(tmp_path, trial_id, stage=None):
    # Tune's trial ids may repeat across stages started in the same instant: the stage's
    # folder tells them apart
    return sorted(p for p in (tmp_path / "ray_results").rglob("checkpoint_*/state.pt")
                  if trial_id in str(p) and (stage is None or f"/{stage}/" in str(p)))


# the killed-worker sweep: PACED's two trials as one stage, and beside it a pack of two
# unpaced configs (a few seconds of full-batch MNIST) whose worker is killed too
PACK_EPOCHS = 200
KILLED = {"name": "faults", "resources": {"cpu": 1}, "max_failures": 2,
          "config": {"noise_ratio": 0.2, "hidden": [16], "checkpoint_every": EVERY},
          "stages": {
              "paced": {"experiment": "train_classifier",
                        "config": {"dataset": "blobs", "epochs": EPOCHS, "epoch_seconds": 0.5,
                                   "seed": {"grid": [0, 1]}}},
              "packed": {"experiment": "train_classifier", "pack": 2,
                         "config": {"dataset": "mnist5k", "epochs": PACK_EPOCHS,
                                    "seed": {"grid": [2, 3]}}}}}


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint_corrupt_checkpoint_restarts(tmp_path):
    """Two trials, each's worker process SIGKILLed past its first checkpoint; the second's
    checkpoints are truncated first. Both are retried: the first from its checkpoint, the
    second from scratch, saying why; one FINISHED run per trial, none left RUNNING.
    Beside them a pack of two configs, its worker killed past its first checkpoint too:
    retried, it resumes both configs from the pack's checkpoint, not from epoch 0."""
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(KILLED))
    driver = _driver(tmp_path, "--num-cpus", "3")
    killed_at = {}

    def corrupt_and_kill(run):
        if run.data.params["seed"] == "1":     # this one's checkpoints are cut in half first
            files = _checkpoints(tmp_path, run.data.tags["raydiff.trial_id"], "paced")
            assert files, "no checkpoint on the storage path"
            for path in files:
                path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
        killed_at[run.info.run_id] = _last_step(client, run)
        os.kill(int(run.data.tags["raydiff.pid"]), signal.SIGKILL)

    try:
        client = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}").client
        # seed 2 is the pack's first member: killing its worker kills the whole pack
        struck = _strike(client, "faults", {0, 1, 2}, EVERY + 2, driver, corrupt_and_kill)
        plain = struck[0]                           # seed 1 had its checkpoint cut in half
        code = driver.finish()
    finally:
        driver.stop()
    log = driver.output()
    assert code == 0, log[-4000:]
    every = _trial_runs(client, "faults")
    packed = [r for r in every if r.data.tags["raydiff.stage"] == "packed"]
    assert len(packed) == 2 and {r.info.status for r in packed} == {"FINISHED"}
    assert {r.data.tags["raydiff.pack_size"] for r in packed} == {"2"}
    starts = {int(r.data.tags["raydiff.resumed_from_epoch"]) for r in packed}
    assert len(starts) == 1, starts                # one checkpoint for the whole pack
    start = starts.pop()
    assert EVERY <= start < PACK_EPOCHS and start % EVERY == 0
    for run in packed:
        tags, metrics = run.data.tags, run.data.metrics
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert tags["raydiff.retried"] == "true" and "raydiff.checkpoint_error" not in tags
        # every epoch logged exactly once: those trained again after the resume are not
        # logged twice
        assert sorted(steps) == list(range(1, PACK_EPOCHS + 1))
        assert metrics["start_epoch"] == start
        assert metrics["epochs_run"] == PACK_EPOCHS - start
        # the worker's peak resident memory while the pack ran: torch and MNIST at least
        assert 50 < metrics["pack_peak_rss_mib"] < 64 * 1024
        print(f"pack seed {run.data.params['seed']}: killed at epoch "
              f"{killed_at[struck[2].info.run_id]}, resumed at {start}, "
              f"{max(0, killed_at[struck[2].info.run_id] - start)} epochs trained again, "
              f"peak RSS {metrics['pack_peak_rss_mib']:.0f} MiB")
    runs = {r.info.run_id: r for r in every if r.data.tags["raydiff.stage"] == "paced"}
    assert len(runs) == 2 and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert len({r.data.tags["raydiff.trial_id"] for r in runs.values()}) == 2

    for run_id, run in runs.items():
        tags, metrics = run.data.tags, run.data.metrics
        steps = [m.step for m in client.get_metric_history(run_id, "loss")]
        assert tags["raydiff.retried"] == "true"
        assert sorted(steps) == list(range(1, EPOCHS + 1))     # every epoch, logged once
        # epochs trained again: from where the attempt started to where the kill found it
        redone = max(0, killed_at[run_id] - int(metrics["start_epoch"]))
        if run_id == plain.info.run_id:
            start = int(tags["raydiff.resumed_from_epoch"])
            # resumed at a checkpoint (logged epochs trail the trial by up to 2 s)
            assert EVERY <= start < EPOCHS and start % EVERY == 0
            assert metrics["start_epoch"] == start and "raydiff.checkpoint_error" not in tags
            assert redone < 2 * EVERY
        else:
            assert "restarting from scratch" in tags["raydiff.checkpoint_error"]
            assert metrics["start_epoch"] == 0 and metrics["epochs_run"] == EPOCHS
            assert "raydiff.resumed_from_epoch" not in tags
        print(f"seed {run.data.params['seed']}: killed at epoch {killed_at[run_id]}, restarted "
              f"at {int(metrics['start_epoch'])}, {redone} epochs trained again "
              f"({redone * PACED['config']['epoch_seconds']:.1f} s of training)")


@pytest.mark.slow
def test_tracking_server_away_mid_sweep_loses_nothing(tmp_path):
    """The MLflow server is killed while trials log to it and comes back on the same port
    a while later: the trials' calls retry, and every epoch and artifact arrives."""
    server = MlflowServer(tmp_path / "mlflow").start()
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(PACED))
    # MLflow's own HTTP retries off, so raydiff's retrying is what carries the trials over
    env = base_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES=0, RAYDIFF_TRACKING_RETRY_S=400)
    driver = _driver(tmp_path, "--tracking-uri", server.uri, env=env)
    try:
        client = MlflowClient(server.uri)
        _strike(client, "faults", {0}, 5, driver, lambda run: None)
        server.stop()
        away = time.monotonic()
        time.sleep(10)
        server.start()
        outage = time.monotonic() - away
        code = driver.finish()
    finally:
        driver.stop()
        server.stop()
    log = driver.output()
    assert code == 0, log[-4000:]
    assert "retrying in" in log                       # the outage was felt, and waited out
    server.start()
    try:
        runs = _trial_runs(client, "faults")
        assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
        for run in runs:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
            assert sorted(steps) == list(range(1, EPOCHS + 1))       # each epoch exactly once
            assert "per_sample.parquet" in {a.path for a in client.list_artifacts(run.info.run_id)}
            assert "noise_auroc" in run.data.metrics
            print(f"seed {run.data.params['seed']}: {len(steps)} epochs logged, server away "
                  f"{outage:.0f} s, trial took {(run.info.end_time - run.info.start_time) / 1000:.0f} s")
    finally:
        server.stop()
