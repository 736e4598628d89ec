"""What a researcher sees: run names, progress columns, dataset digests, parent runs, and
the MLflow UI itself, rendered by headless Chromium."""

import re
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import RAYDIFF
from raydiff import tracking
from raydiff.tune import describe
from raydiff.tune import sweep as sweeps
from raydiff.tune.spec import TrialSpec, tune_value

DEMO = {
    "name": "names",
    "config": {"dataset": "mnist5k", "subset_size": 300, "seed": 0},
    "stages": {
        "identify": {"experiment": "identify",
                     "config": {"strategy": {"grid": ["stragglers", "confidence", "energy"]},
                                "noise_ratio": {"grid": [0.0, 0.2]}}},
        "imbalance": {"experiment": "imbalance", "after": "identify",
                      "config": {"train_ratio": {"grid": [0.9, 0.5]},
                                 "remaining_train_ratio": {"grid": [0.0, 0.5, 1.0]}}},
    },
}


def _named(raw):
    sweep = sweeps.validate(raw)
    planned = sweeps.plan(sweep)
    keys = {s.name: describe.name_specs(describe.stage_label(s), planned[s.name], own=s.config)
            for s in sweep.stages}
    return planned, keys


# -- run names -------------------------------------------------------------------------

def test_run_names_carry_the_varied_keys_of_the_stage_and_its_upstream():
    planned, keys = _named(DEMO)
    assert keys["identify"] == ["strategy", "noise_ratio"]
    # the after-stage names its runs by identify's axes too, inherited ones first
    assert keys["imbalance"] == ["identify.strategy", "noise_ratio", "train_ratio",
                                 "remaining_train_ratio"]
    names = [s.name for s in planned["imbalance"]]
    assert len(set(names)) == len(names) == 36
    assert "imbalance strategy=stragglers noise=0.2 train_ratio=0.9 remaining=0.5" in names
    for spec in planned["identify"]:
        p = spec.params
        assert spec.name == f"identify strategy={p['strategy']} noise={p['noise_ratio']:g}"
    # fixed keys (dataset, seed, subset) never clutter a name
    assert not any("seed" in n or "mnist5k" in n for n in names)


def test_seed_axis_reads_last_and_a_single_trial_is_named_by_its_stage():
    raw = {"name": "s", "experiment": "identify",
           "config": {"seed": {"grid": [0, 1]}, "lr": {"grid": [0.1, 0.01]}}}
    planned, keys = _named(raw)
    assert keys["main"] == ["lr", "seed"]
    assert planned["main"][0].name == "identify lr=0.1 seed=0"   # single stage: experiment
    one, keys = _named({"name": "one", "experiment": "identify", "config": {"seed": 3}})
    assert keys["main"] == [] and one["main"][0].name == "identify"


def test_names_that_would_read_alike_are_numbered():
    long_a, long_b = "x" * 30 + "a", "x" * 30 + "b"      # cut to the same 16 characters
    specs = [TrialSpec("train", "train_classifier", {"model": v}, {"model": v})
             for v in (long_a, long_b)]
    describe.name_specs("train", specs, own={"model"})
    assert specs[0].name != specs[1].name
    assert specs[1].name.endswith("#2")


def test_search_trials_add_the_drawn_values_and_their_number():
    spec = TrialSpec("tune", "identify", {"seed": 1}, {"seed": 1}, name="tune seed=1")
    config = {"trial": tune_value(spec), "lr": 0.012345}
    assert describe.trial_name(config, "ab12c_00007") == "tune seed=1 lr=0.01235 #00007"
    unnamed = TrialSpec("x", "identify", {}, {})
    assert describe.trial_name({"trial": tune_value(unnamed)}, "t_1") == "x-t_1"
    assert "/" not in describe.dirname("a b/c=0.2", "t_1")


def test_short_names_keep_the_long_form_when_two_keys_would_collide():
    assert describe.short_names(["identify.strategy", "noise_ratio"]) == {
        "identify.strategy": "strategy", "noise_ratio": "noise"}
    assert describe.short_names(["a.seed", "seed"]) == {"a.seed": "a.seed", "seed": "seed"}


# -- datasets ---------------------------------------------------------------------------

def test_data_digest_is_about_the_samples_and_their_labels_not_their_order():
    rng = np.random.default_rng(0)
    ids = rng.permutation(1000)[:300]
    labels = rng.integers(0, 10, 300)
    digest = describe.data_digest(ids, labels)
    perm = rng.permutation(300)
    assert describe.data_digest(ids[perm], labels[perm]) == digest
    flipped = labels.copy()
    flipped[17] = (flipped[17] + 1) % 10                       # one noisy label more
    assert describe.data_digest(ids, flipped) != digest
    other = ids.copy()
    other[5] = 1000 + 5                                        # one other sample
    assert describe.data_digest(other, labels) != digest


def test_training_data_takes_the_train_rows_and_the_noise_properties():
    table = pd.DataFrame({"sample_id": [3, 1, 2, 9], "observed_label": [0, 1, 1, 2],
                          "is_noisy": [True, False, False, False],
                          "split": ["train", "train", "train", "test"]})
    found = describe.training_data(table, {"dataset": "mnist5k", "noise_ratio": 0.2,
                                           "noise_kind": "asymmetric", "seed": 1})
    assert found["name"] == "mnist5k" and found["num_rows"] == 3
    assert found["digest"] == describe.data_digest([3, 1, 2], [0, 1, 1])
    assert found["properties"]["noise_kind"] == "asymmetric"
    assert found["properties"]["noisy_labels"] == 1
    assert describe.training_data(table.drop(columns="observed_label"), {}) is None


# -- progress ----------------------------------------------------------------------------

def test_time_left_from_finished_trials():
    from raydiff.tune.progress import estimate_left, format_seconds
    assert estimate_left([], remaining=4, running=2) is None
    # 10 s a trial, 4 left of which 2 run half done, 2 at a time: 15 s
    assert estimate_left([8.0, 12.0], remaining=4, running=2) == pytest.approx(15.0)
    assert format_seconds(15) == "15s" and format_seconds(125) == "2m05s"
    assert format_seconds(7300) == "2h01m"


# -- MLflow: experiment kind, parent runs, dataset inputs -----------------------------------

def test_experiments_are_model_training_and_parent_runs_are_made_once(workdir):
    tracker = tracking.Tracker()
    old = tracker.client.create_experiment("older")             # made before the tag existed
    exp = tracker.experiment_id("fresh")
    kind = tracking.TAG_EXPERIMENT_KIND
    assert tracker.client.get_experiment(exp).tags[kind] == "custom_model_development"
    assert kind not in tracker.client.get_experiment(old).tags
    assert tracker.experiment_id("older") == old
    assert tracker.client.get_experiment(old).tags[kind] == "custom_model_development"
    assert tracker.runs_page("fresh", "http://127.0.0.1:5") == (
        f"http://127.0.0.1:5/#/experiments/{exp}?workflowType=machine_learning")

    session = tracker.session_run(exp, "fresh", "s1")
    stage = tracker.group_run(exp, kind="stage", sweep="fresh", session="s1", stage="a",
                              name="a", parent=session)
    tracker.end(stage)
    again = tracker.group_run(exp, kind="stage", sweep="fresh", session="s1", stage="a",
                              name="a", parent=session)       # a resumed session
    assert again == stage
    assert tracker.client.get_run(stage).info.status == "RUNNING"
    other = tracker.group_run(exp, kind="stage", sweep="fresh", session="s2", stage="a",
                              name="a")
    assert other != stage
    assert tracker.client.get_run(stage).data.tags[tracking.TAG_PARENT] == session
    tags = {tracking.TAG_SESSION: "s1", tracking.TAG_KIND: "trial"}
    run_id, _ = tracker.trial_run(exp, stage="a", trial_id="t1", run_name="a x=1",
                                  params={"x": 1}, tags=tags, parent=stage)
    tracker.end(run_id)
    # Tune's trial ids repeat across stages: stage b's trial t1 is a run of its own, and
    # stage a's trial t1, retried, finds its finished run again
    run_b, status_b = tracker.trial_run(exp, stage="b", trial_id="t1", run_name="b x=1",
                                        params={"x": 1}, tags=tags)
    assert status_b == "NEW" and run_b != run_id
    assert tracker.trial_run(exp, stage="a", trial_id="t1", run_name="a x=1", params={"x": 1},
                             tags=tags, parent=stage) == (run_id, "FINISHED")
    assert tracker.client.get_run(run_id).data.tags[tracking.TAG_STAGE] == "a"
    tracker.client.delete_run(run_b)
    assert tracker.client.get_run(run_id).data.tags[tracking.TAG_PARENT] == stage
    # trial-run listings (reports, stale-run cleanup) see trials only, not the parents
    assert [r.info.run_id for r in tracker.runs("fresh", session="s1")] == [run_id]

    tracker.log_training_data(run_id, name="mnist5k", digest="abcd1234", num_rows=300,
                              properties={"noise_ratio": 0.2})
    inputs = tracker.client.get_run(run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("mnist5k", "abcd1234")]
    assert '"noise_ratio": 0.2' in inputs[0].dataset.profile


# -- the first view: what the UI opens on --------------------------------------------------

def _runs_table(rows):
    """A session's trial runs as tracking.runs_table gives them."""
    return pd.DataFrame(rows)


def test_first_view_shows_each_stages_swept_keys_and_main_metrics_and_charts_its_axis():
    identify = [{"stage": "identify", "experiment": "identify", "start_time": 1, "seed": 0,
                 "dataset": "mnist5k", "strategy": s, "noise_ratio": n, "epochs": 500,
                 "m.noise_auroc": 0.9 if n else None, "m.n_hard": 300.0}
                for s in ("stragglers", "energy") for n in (0.0, 0.2)]
    imbalance = [{"stage": "imbalance", "experiment": "imbalance", "start_time": 2, "seed": 0,
                  "dataset": "mnist5k", "identify.strategy": s, "noise_ratio": 0.2,
                  "train_ratio": t, "remaining_train_ratio": r, "m.acc_hard_mean": 40.0,
                  "m.acc_easy_mean": 90.0, "m.acc_full_mean": 80.0}
                 for s in ("stragglers", "energy") for t in (0.9, 0.5) for r in (0.0, 1.0)]
    # newest first, as MLflow lists them: the view still reads identify, then imbalance
    view = describe.first_view(_runs_table(imbalance + identify))
    # fixed keys (dataset, seed, epochs) are no columns; a stage's keys in Config order
    assert view["stages"] == ["identify", "imbalance"]
    assert view["params"] == ["noise_ratio", "strategy", "identify.strategy", "train_ratio",
                              "remaining_train_ratio"]
    assert view["main_metrics"] == ["noise_auroc", "acc_hard_mean"]
    assert view["metrics"] == ["n_hard", "acc_full_mean", "acc_easy_mean"]
    # the main metric over the last numeric swept key (never the seed)
    assert view["charts"] == [{"stage": "identify", "x": "noise_ratio", "y": "noise_auroc"},
                              {"stage": "imbalance", "x": "remaining_train_ratio",
                               "y": "acc_hard_mean"}]
    # a stage that sweeps only names gets columns but no chart; nothing swept, no columns
    names_only = [{**r, "noise_ratio": 0.0} for r in identify]
    assert describe.first_view(_runs_table(names_only))["charts"] == []
    assert describe.first_view(_runs_table(identify[:1]))["params"] == []


def test_the_first_view_is_an_mlflow_shared_view_of_the_session(workdir):
    import json

    tracker = tracking.Tracker()
    exp = tracker.experiment_id("viewed")
    assert tracker.share_first_view("missing", "http://h:1", session="s", stages=["a"],
                                    params=[], main_metrics=[], metrics=[], charts=[]) is None
    url = tracker.share_first_view(
        "viewed", "http://127.0.0.1:5", session="20261205-101010",
        stages=["identify", "imbalance"], params=["noise_ratio"],
        main_metrics=["noise_auroc"], metrics=["n_hard"],
        charts=[{"stage": "identify", "x": "noise_ratio", "y": "noise_auroc"}])
    key = "raydiff-20261205-101010"
    assert url == (f"http://127.0.0.1:5/#/experiments/{exp}/runs?viewStateShareKey={key}"
                   f"&workflowType=machine_learning")
    state = json.loads(tracker.client.get_experiment(exp).tags[f"mlflow.sharedViewState.{key}"])
    # the session's trial runs only (not its parents or report), a group per stage
    assert state["searchFilter"] == ("tags.`raydiff.session` = '20261205-101010' and "
                                     "tags.`raydiff.kind` = 'trial'")
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "raydiff.stage"}]
    assert state["columnOrder"][:4] == ["attributes.`Run Name`", "runDateAndNestInfo",
                                        "metrics.`noise_auroc`", "params.`noise_ratio`"]
    assert {"params.`noise_ratio`", "metrics.`n_hard`"} <= set(state["selectedColumns"])
    (chart,) = state["compareRunCharts"]
    assert chart["type"] == "SCATTER" and chart["xaxis"] == {"key": "noise_ratio", "type": "PARAM"}
    # a single-stage sweep is not grouped: one group would only hide its runs a level down
    tracker.share_first_view("viewed", "http://h:1", session="s2", stages=["main"],
                             params=[], main_metrics=[], metrics=[], charts=[])
    single = json.loads(tracker.client.get_experiment(exp).tags["mlflow.sharedViewState.raydiff-s2"])
    assert single["groupBy"] is None


# -- the real UI in a real browser ---------------------------------------------------------

SMOKE = {
    "name": "uitest",
    "resources": {"cpu": 1},
    "config": {"dataset": "mnist5k"},
    "experiment": "identify",
}
SMOKE["config"].update({"strategy": {"grid": ["stragglers", "energy"]},
                        "noise_ratio": {"grid": [0.0, 0.2]}})


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _dom(browser, url, budget_ms, screenshot=None):
    """The DOM Chromium renders for ``url`` at 1600x1000 (a screenshot instead, into
    the file ``screenshot``, when given)."""
    out = [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    done = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu",
                           "--disable-dev-shm-usage", "--window-size=1600,1000",
                           f"--virtual-time-budget={budget_ms}", *out, url],
                          capture_output=True, text=True, timeout=180)
    return done.stdout


def _text(html):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.slow
def test_mlflow_ui_shows_named_runs_with_datasets_in_chromium(workdir):
    from procs import Proc, free_port, wait_until

    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install -y chromium; "
                    ".ci/run installs it): the MLflow UI cannot be checked in a browser")
    started = time.monotonic()
    (workdir / "ui.yaml").write_text(yaml.safe_dump(SMOKE))
    # one config per trial, so the progress table has a row per config (a pack's row is
    # named for the pack, "identify pack of 4 (strategy x noise)": tests/test_packs.py)
    done = subprocess.run(RAYDIFF + ["run", "ui.yaml", "--smoke", "--num-cpus", "2",
                                     "--no-dashboard", "--pack", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the progress table has the varied keys as columns and names the trials alike
    assert re.search(r"\|\s*strategy\s*\|\s*noise\s*\|", done.stdout), done.stdout[-3000:]
    assert "identify strategy=energy noise=0.2" in done.stdout
    assert "started with configuration" not in done.stdout       # no per-trial config boxes

    port = free_port()
    ui = Proc(RAYDIFF + ["ui", "--port", str(port)], log=workdir / "ui.log", cwd=workdir)
    try:
        wait_until(lambda: "open this:" in ui.output(), 120, "raydiff ui's first view", proc=ui)
        url = re.search(r"(http://127\.0\.0\.1:\d+/#/experiments/\d+\?workflowType="
                        r"machine_learning)", ui.output()).group(1)
        first = re.search(r"open this: (http://\S+viewStateShareKey=\S+)", ui.output()).group(1)

        def healthy():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    return True
            except OSError:
                return False

        wait_until(healthy, 120, "the MLflow UI", proc=ui)
        # the first view, without a click: the trial runs by name, grouped by stage, the
        # main metric and the swept keys as columns (the grid draws only the columns in
        # view, so these are on screen, not scrolled away)
        for budget in (15000, 40000):
            view = _dom(browser, first, budget)
            if "identify strategy=" in view:
                break
        shown = _text(view)
        assert "You're viewing a shared view" in shown, shown[:3000]
        assert "4 matching runs" in shown, shown[:3000]      # one stage: not grouped
        for s in ("stragglers", "energy"):
            for n in ("0", "0.2"):
                assert f"identify strategy={s} noise={n} " in shown, shown[:3000]
        assert 'col-id="params.`strategy`"' in view and 'col-id="params.`noise_ratio`"' in view
        assert 'col-id="metrics.`noise_auroc`"' in view
        _dom(browser, first, 15000, screenshot=workdir / "first_view.png")
        print(f"first view: {first} (screenshot {workdir / 'first_view.png'})")
        # the table is drawn by JavaScript after the runs are fetched; give it more
        # virtual time if the first try comes back before the rows
        for budget in (15000, 40000):
            table = _text(_dom(browser, url, budget))
            if "matching runs" in table:
                break
        # the runs table (not the GenAI pages), folded: the session's run on top, its
        # stage and 4 trial runs inside it
        assert "Run Name" in table and "Dataset" in table, table[:3000]
        assert "uitest " in table and "6 matching runs" in table, table[:3000]
        client = tracking.Tracker(f"sqlite:///{workdir / 'mlflow.db'}").client
        exp = client.get_experiment_by_name("uitest").experiment_id
        trials = client.search_runs([exp], "tags.`raydiff.kind` = 'trial'")
        pages = {r.info.run_name: _text(_dom(browser, f"http://127.0.0.1:{port}/#/experiments/"
                                              f"{exp}/runs/{r.info.run_id}", 15000))
                 for r in trials}
    finally:
        ui.stop()
    names = {f"identify strategy={s} noise={n}" for s in ("stragglers", "energy")
             for n in ("0", "0.2")}
    assert set(pages) == names
    digests = {}
    for name, page in pages.items():
        assert name in page and "Parent run identify" in page, page[:3000]
        found = re.search(r"Datasets mnist5k \(([0-9a-f]{16})\) train", page)
        assert found, page[:3000]
        digests[name] = found.group(1)
    # equal digests = equal training labels: the noise-free trials share one, the noisy
    # ones another (the same seed flips the same labels), and the two differ
    assert digests["identify strategy=stragglers noise=0"] == digests["identify strategy=energy noise=0"]
    assert digests["identify strategy=stragglers noise=0.2"] == digests["identify strategy=energy noise=0.2"]
    assert digests["identify strategy=energy noise=0"] != digests["identify strategy=energy noise=0.2"]
    print(f"browser test: {time.monotonic() - started:.0f} s")
