"""Stages as a graph: order, levels, failure reaching only the dependants, and (end to end)
independent stages running side by side and resuming together after the driver dies."""

import os
import signal
import threading
import time

import pytest
import yaml

from conftest import RAYDIFF, REPO
from procs import Proc, base_env, wait_until
from raydiff import tracking
from raydiff.experiments.config import ConfigError
from raydiff.tune import graph
from raydiff.tune import sweep as sweeps

# a -> c, b alone, d reads c and b, e reads nothing
AFTER = {"a": [], "b": [], "c": ["a"], "d": ["c", "b"], "e": []}


def test_levels_put_each_stage_one_past_its_deepest_upstream():
    assert graph.levels(AFTER) == [["a", "b", "e"], ["c"], ["d"]]
    order = graph.order(AFTER)
    assert all(order.index(u) < order.index(s) for s, ups in AFTER.items() for u in ups)
    assert graph.dependants(AFTER, "a") == {"c", "d"}
    assert graph.dependants(AFTER, "b") == {"d"}
    assert graph.dependants(AFTER, "e") == set()


def test_cycle_and_missing_stage_refused_naming_the_stage():
    with pytest.raises(ConfigError, match=r"cycle through 'x'.*x -> y -> x"):
        graph.order({"x": ["y"], "y": ["x"], "z": []})
    with pytest.raises(ConfigError, match=r"stages\.y\.after names a missing stage 'nope'"):
        graph.order({"x": [], "y": ["nope"]})
    raw = {"name": "g", "stages": {"cl": {"experiment": "confident_learning", "after": "folds"},
                                   "cv": {"experiment": "crossval"}}}
    with pytest.raises(ConfigError, match=r"stages\.cl\.after names a missing stage 'folds'"):
        sweeps.validate(raw)


def test_sweep_graph_follows_after_and_gathers():
    raw = yaml.safe_load((REPO / "sweeps" / "benchmark_demo.yaml").read_text())
    sweep = sweeps.validate(raw)
    levels = graph.levels(sweep.after)
    assert levels[1] == ["confident_learning"]          # it gathers the crossval folds
    assert set(levels[0]) == {"dynamics", "identify", "inversion", "data_params", "small_loss",
                              "crossval", "vog", "cscore"}


def _fake_stages(seconds, fail=()):
    """run_stage for run_graph: each stage sleeps, records when it ran, and fails (one
    failed trial) or raises when named in ``fail``."""
    spans, lock = {}, threading.Lock()

    def run(name):
        start = time.monotonic()
        time.sleep(seconds[name])
        with lock:
            spans[name] = (start, time.monotonic())
        if name in fail and fail[name] == "raise":
            raise RuntimeError(f"{name} broke")
        return {"finished": 1, "failed": 1 if name in fail else 0}

    return run, spans


def test_independent_stages_overlap_and_a_stage_waits_for_what_it_reads():
    seconds = {"a": 0.6, "b": 0.2, "c": 0.2, "d": 0.2, "e": 0.2}
    run, spans = _fake_stages(seconds)
    lines = []
    out = graph.run_graph(AFTER, run, log=lines.append)
    assert {r["state"] for r in out.values()} == {"finished"}
    assert spans["b"][0] < spans["a"][1] and spans["e"][0] < spans["a"][1]   # side by side
    assert spans["c"][0] >= spans["a"][1]                                     # waits for a
    assert spans["d"][0] >= max(spans["c"][1], spans["b"][1])
    # d starts once c is done, not after a whole "level" of slow stages
    assert spans["d"][0] - spans["c"][1] < 0.3
    assert any("running: a, b, e" in line and "waiting: c, d" in line for line in lines)

    run, spans = _fake_stages(seconds)
    out = graph.run_graph(AFTER, run, series=True, log=lambda line: None)
    ordered = sorted(spans.values())
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(ordered, ordered[1:]))  # one at a time
    assert [n for n, _ in sorted(spans.items(), key=lambda kv: kv[1])] == graph.order(AFTER)


@pytest.mark.parametrize("how", ["trial", "raise"])
def test_failed_stage_skips_only_its_dependants(how):
    seconds = dict.fromkeys(AFTER, 0.05)
    run, spans = _fake_stages(seconds, fail={"a": how})
    out = graph.run_graph(AFTER, run, log=lambda line: None)
    assert out["a"]["state"] == "failed"
    assert ("a broke" in out["a"]["reason"]) if how == "raise" else "1 of 2 trials failed" in out["a"]["reason"]
    assert out["c"] == {**out["c"], "state": "skipped", "reason": "upstream stage a failed"}
    assert out["d"]["state"] == "skipped" and "upstream stage c was skipped" in out["d"]["reason"]
    assert {n for n in spans} == {"a", "b", "e"}           # c and d never ran
    assert out["b"]["state"] == out["e"]["state"] == "finished"
    text = "\n".join(graph.summary_lines(out))
    assert "c: skipped, upstream stage a failed" in text and "b: finished" in text


# -- end to end: real Ray, real MLflow, the driver killed mid-graph ----------------------

# a: two crossval folds (unpaced, a few seconds each), b: two paced classifiers that read
# nothing, c: confident learning gathering a's folds. Half a CPU per trial, so a's and b's
# four trials fit the two CPUs at once: in series b could start only after a's last trial.
THREE = {"name": "graph3", "resources": {"cpu": 0.5}, "max_failures": 1,
         "config": {"dataset": "blobs", "noise_ratio": 0.2, "hidden": [16]},
         "stages": {
             "a": {"experiment": "crossval",
                   "config": {"folds": 2, "fold": {"grid": [0, 1]}, "epochs": 1500,
                              "checkpoint_every": 500, "model": "simple_nn",
                              "batch_size": 32, "lr_milestones": []}},
             "b": {"experiment": "train_classifier",
                   "config": {"epochs": 12, "epoch_seconds": 0.5, "checkpoint_every": 4,
                              "seed": {"grid": [0, 1]}}},
             "c": {"experiment": "confident_learning", "after": "a"}}}


def _runs(client):
    exp = tracking.retrying(client.get_experiment_by_name, "graph3")
    if exp is None:
        return []
    return tracking.retrying(client.search_runs, [exp.experiment_id],
                             "tags.`raydiff.kind` = 'trial'")


@pytest.mark.slow
def test_independent_stages_run_side_by_side_and_resume_after_the_driver_dies(tmp_path):
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(THREE))
    args = RAYDIFF + ["run", "g.yaml", "--num-cpus", "2", "--no-dashboard"]
    # the store made before the driver starts, so the two never race to create its tables
    client = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}").client
    # every Tuner draws the same trial-id prefix, as two stages started in the same
    # instant do by chance: a stage must still find its own runs, never another's
    env = base_env(_TEST_TUNE_TRIAL_UUID="same")
    driver = Proc(args, log=tmp_path / "driver.log", cwd=tmp_path, env=env)
    seen = {}
    try:

        def a_and_b_training():
            # a trial run is training once its process tagged it (after its params)
            going = [r for r in _runs(client) if r.info.status == "RUNNING"
                     and "raydiff.pid" in r.data.tags]
            seen.update({r.data.tags["raydiff.stage"]: r for r in going})
            return {r.data.tags["raydiff.stage"] for r in going} >= {"a", "b"}

        wait_until(a_and_b_training, 400, "stages a and b training at once", every=0.3,
                   proc=driver)
        os.killpg(driver.pid, signal.SIGKILL)        # the driver and its local Ray, at once
        driver.popen.wait(timeout=60)
    finally:
        driver.stop()
    before = {r.info.run_id: r for r in _runs(client)}
    assert not any(r.data.tags["raydiff.stage"] == "c" for r in before.values())

    resumed = Proc(args + ["--resume"], log=tmp_path / "resume.log", cwd=tmp_path, env=env)
    resumed.finish(timeout=500)
    log = resumed.output()
    assert resumed.popen.returncode == 0, log[-4000:]
    assert "resuming session" in log
    assert "  c: finished, 1 trials finished, 0 failed" in log
    runs = _runs(client)
    by_stage = {}
    for run in runs:
        by_stage.setdefault(run.data.tags["raydiff.stage"], []).append(run)
    assert {k: len(v) for k, v in by_stage.items()} == {"a": 2, "b": 2, "c": 1}
    assert {r.info.status for r in runs} == {"FINISHED"}       # one FINISHED run per trial
    assert {r.data.tags["raydiff.trial_id"] for r in by_stage["a"]} == {"same_00000", "same_00001"}
    assert {r.data.tags["raydiff.trial_id"] for r in by_stage["b"]} == {"same_00000", "same_00001"}
    assert set(before) <= {r.info.run_id for r in runs}         # resumed runs were re-opened
    a_end = max(r.info.end_time for r in by_stage["a"])
    b_start = min(r.info.start_time for r in by_stage["b"])
    assert b_start < a_end, "b waited for a, which it does not read"
    c_start = by_stage["c"][0].info.start_time
    assert c_start >= a_end                                   # c read a's finished folds
    print(f"b started {(a_end - b_start) / 1000:.1f} s before a's last trial ended; "
          f"{len(before)} runs open when the driver was killed")


def test_retried_summary_says_what_ran_again():
    from types import SimpleNamespace as NS

    from raydiff.tune.runner import retried_summary

    def run(stage, **tags):
        return NS(data=NS(tags={"raydiff.stage": stage, **tags}))

    runs = [run("a", **{"raydiff.retried": "true", "raydiff.resumed_from_epoch": "200",
                        "raydiff.node": "10.0.0.1"}),
            run("a", **{"raydiff.retried": "true", "raydiff.resumed_from_epoch": "400",
                        "raydiff.node": "10.0.0.1"}),
            run("a", **{"raydiff.retried": "true", "raydiff.node": "10.0.0.2"}),
            run("a"), run("b", **{"raydiff.retried": "true"})]
    assert retried_summary(runs, "a") == ("3 configs retried: 2 resumed from a checkpoint "
                                          "(epochs 200-400), 1 started over; finished on "
                                          "10.0.0.1, 10.0.0.2")
    assert retried_summary(runs, "c") == ""


def test_hosts_summary_names_every_live_host():
    from types import SimpleNamespace as NS

    from raydiff.tune.runner import hosts_summary

    def run(stage, node, status="FINISHED"):
        return NS(data=NS(tags={"raydiff.stage": stage, "raydiff.node": node}),
                  info=NS(status=status))

    runs = [run("a", "10.0.0.1"), run("a", "10.0.0.1"), run("a", "10.0.0.2"),
            run("a", "10.0.0.2", "FAILED"), run("b", "10.0.0.2")]
    assert hosts_summary(runs, "a", ["10.0.0.1", "10.0.0.2"]) == \
        "ran on 10.0.0.1: 2, 10.0.0.2: 1"
    # a live host that ran none of the stage's configs is named with 0
    assert hosts_summary(runs[:2], "a", ["10.0.0.1", "10.0.0.2"]) == \
        "ran on 10.0.0.1: 2, 10.0.0.2: 0"
    assert hosts_summary(runs[:2], "a", ["10.0.0.1"]) == ""          # one host: nothing
    assert graph.summary_lines({"a": {"state": "finished", "finished": 3, "failed": 0,
                                      "seconds": 5, "retried": "1 config retried: x"}}) == [
        "  a: finished, 3 trials finished, 0 failed, 5 s; 1 config retried: x"]
