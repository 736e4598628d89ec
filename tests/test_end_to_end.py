"""Sweeps through the real CLI, real Ray processes and a real SQLite MLflow store."""

import os
import signal
import subprocess
import time

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import RAYDIFF

pytestmark = pytest.mark.slow

SWEEP = {
    "name": "e2e",
    "resources": {"cpu": 1},
    "config": {"dataset": "mnist5k", "subset_size": 300, "noise_ratio": 0.2},
    "stages": {
        "identify": {"experiment": "identify",
                     # 60 epochs on 300 digits are too few for the radii to turn: judged by
                     # the final model, every class has a count (this test is the plumbing)
                     "config": {"strategy": {"grid": ["stragglers", "energy"]}, "epochs": 60,
                                "inversion_start": 5, "max_retries": 0,
                                "judge_by_final_model": True}},
        "imbalance": {"experiment": "imbalance", "after": "identify",
                      "config": {"train_ratio": 0.8, "remaining_train_ratio": {"grid": [0.0, 1.0]},
                                 "models_per_cell": 2, "epochs": 20}},
    },
}


def _run(args, timeout=420, **kw):
    return subprocess.run(RAYDIFF + args, capture_output=True, text=True, timeout=timeout, **kw)


def _client(workdir):
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def _trial_runs(client, name):
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], "tags.`raydiff.kind` = 'trial'", max_results=1000)


def test_smoke_sweep_logs_runs_metrics_and_tables(workdir):
    (workdir / "e2e.yaml").write_text(yaml.safe_dump(SWEEP))
    done = _run(["run", "e2e.yaml", "--num-cpus", "2", "--no-dashboard"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stage imbalance: 4 trials finished, 0 failed" in done.stdout

    client = _client(workdir)
    runs = _trial_runs(client, "e2e")
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["raydiff.trial_id"] for r in runs}) == 6
    identify = [r for r in runs if r.data.tags["raydiff.stage"] == "identify"]
    imbalance = [r for r in runs if r.data.tags["raydiff.stage"] == "imbalance"]
    assert {r.data.params["strategy"] for r in identify} == {"stragglers", "energy"}
    assert {r.data.params["identify.strategy"] for r in imbalance} == {"stragglers", "energy"}
    for run in identify:
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in history] == list(range(1, 61))
        assert run.data.tags["raydiff.experiment"] == "identify"
        local = client.download_artifacts(run.info.run_id, "per_sample.parquet", str(workdir))
        table = pd.read_parquet(local)
        assert len(table) == 300
        assert {"sample_id", "label", "observed_label", "is_noisy", "split", "hard",
                "score"} <= set(table.columns)
        assert table["is_noisy"].sum() == 60
        assert int(run.data.metrics["n_hard"]) == int(table["hard"].sum())
    digests = {}
    for run in imbalance:
        assert 0 <= run.data.metrics["acc_hard_mean"] <= 100
        assert "trial_seconds" in run.data.metrics
        # its training set as the run's dataset input: the cell's rows, identify's labels
        (data,) = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert data.dataset.name == "mnist5k"
        assert f'"num_rows": {int(run.data.metrics["n_train"])}' in data.dataset.profile
        digests[run.data.params["identify.strategy"], run.data.params["remaining_train_ratio"]] = (
            data.dataset.digest)
    assert len(set(digests.values())) == 4        # each cell trains on a set of its own

    report = _run(["report", "e2e", "--out", "rep"])
    assert report.returncode == 0, report.stderr[-3000:]
    assert (workdir / "rep" / "imbalance_summary.csv").exists()
    # one figure for the question (a row per strategy); per-cell figures only on request
    assert (workdir / "rep" / "imbalance_accuracy.png").exists()
    assert not list((workdir / "rep").glob("imbalance_*_hard.png"))
    summary = pd.read_csv(workdir / "rep" / "imbalance_summary.csv")
    assert set(summary["remaining_train_ratio"]) == {0.0, 1.0}
    exp = client.get_experiment_by_name("e2e")
    reports = client.search_runs([exp.experiment_id], "tags.`raydiff.kind` = 'report'")
    assert len(reports) == 1 and reports[0].info.status == "FINISHED"
    names = {a.path for a in client.list_artifacts(reports[0].info.run_id)}
    assert "imbalance_summary.csv" in names
    # the hardness report reads the identify tables' injected noise and is logged too
    assert {"hardness_detection.csv", "hardness_tables.md"} <= names


def test_resume_after_driver_killed_runs_only_unfinished(workdir):
    # one config per trial: this is the per-trial resume (packs: tests/test_packs.py)
    sweep = {"name": "resume", "resources": {"cpu": 1}, "pack": 1,
             "experiment": "identify",
             "config": {"dataset": "mnist5k", "subset_size": 300, "epochs": 300,
                        "max_retries": 0, "seed": {"grid": [0, 1, 2, 3, 4, 5]}}}
    (workdir / "r.yaml").write_text(yaml.safe_dump(sweep))
    driver = subprocess.Popen(RAYDIFF + ["run", "r.yaml", "--num-cpus", "2", "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    client = None
    deadline = time.time() + 300
    finished = []
    while time.time() < deadline:
        time.sleep(1)
        if not (workdir / "ray_results").exists():   # the driver has made the store by then
            continue
        try:
            client = client or _client(workdir)
            if client.get_experiment_by_name("resume") is not None:
                finished = [r for r in _trial_runs(client, "resume") if r.info.status == "FINISHED"]
        except Exception:       # noqa: BLE001 - the store may be busy; ask again
            client = None
            continue
        if len(finished) >= 2:
            break
    assert len(finished) >= 2, "the sweep never got going"
    os.killpg(driver.pid, signal.SIGKILL)            # the driver and its local Ray die at once
    driver.wait()
    before = {r.info.run_id: r.info.end_time for r in finished}
    assert len(before) < 6, "too slow to interrupt: everything finished already"

    started = time.monotonic()
    done = _run(["run", "r.yaml", "--resume", "--num-cpus", "2", "--no-dashboard"])
    print(f"driver killed with {len(before)} of 6 trials finished; the resume ran "
          f"{6 - len(before)} in {time.monotonic() - started:.0f} s and kept the {len(before)}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming session" in done.stdout
    runs = _trial_runs(client, "resume")
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(runs) == 6                            # one run per trial, no duplicates
    assert len({r.data.tags["raydiff.trial_id"] for r in runs}) == 6
    after = {r.info.run_id: r.info.end_time for r in runs}
    for run_id, end_time in before.items():          # finished trials were not redone
        assert after[run_id] == end_time
