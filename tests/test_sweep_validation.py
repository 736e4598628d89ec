"""Bad sweep files are refused before Ray starts, with the key and the allowed values."""

import json
from pathlib import Path

import pytest
import yaml

from raydiff.cli import main
from raydiff.experiments.config import ConfigError
from raydiff.tune import sweep as sweeps

REPO = Path(__file__).resolve().parents[1]
GOOD = {
    "name": "t",
    "config": {"dataset": "mnist5k", "seed": {"grid": [0, 1]}},
    "stages": {
        "identify": {"experiment": "identify",
                     "config": {"strategy": {"grid": ["stragglers", "energy"]}}},
        "imbalance": {"experiment": "imbalance", "after": "identify",
                      "config": {"train_ratio": {"grid": [0.9, 0.5]}}},
    },
}


def _with(path, value):
    raw = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path
    node = raw
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


_DELETE = object()
BAD = [
    # (where, value, words the message must contain)
    (("stages", "identify", "config", "strat"), "x", ["strat", "valid keys", "strategy"]),
    (("stages", "identify", "config", "strategy"), "loss", ["strategy", "stragglers", "energy"]),
    (("stages", "identify", "config", "strategy"), {"grid": ["energy", "bogus"]}, ["bogus", "confidence"]),
    (("stages", "identify", "config", "epochs"), "many", ["epochs", "int"]),
    (("stages", "identify", "config", "epochs"), 2.5, ["epochs", "int"]),
    (("stages", "identify", "config", "noise_ratio"), 1.5, ["noise_ratio", "[0, 1]"]),
    (("stages", "identify", "config", "noise_ratio"), -0.1, ["noise_ratio", "[0, 1]"]),
    (("stages", "imbalance", "config", "train_ratio"), {"grid": [0.9, 2]}, ["train_ratio", "[0, 1]"]),
    (("stages", "imbalance", "config", "train_ratio"), {"grid": []}, ["train_ratio", "non-empty"]),
    (("stages", "imbalance", "config", "reduce_hard"), "yes", ["reduce_hard", "bool"]),
    (("config", "dataset"), "imagenet22k", ["dataset", "mnist5k", "CIFAR10"]),
    (("stages", "identify", "config", "model"), "vit", ["model", "simple_nn"]),
    (("stages", "identify", "experiment"), "identfy", ["identfy", "imbalance"]),
    (("stages", "imbalance", "after"), "scoring", ["scoring", "missing stage"]),
    (("stages", "imbalance", "after"), _DELETE, ["imbalance", "after"]),
    (("stages", "identify", "after"), "imbalance", ["cannot take"]),
    (("stages", "identify", "colour"), "red", ["colour", "valid keys"]),
    (("resources",), {"cpu": 1, "tpu": 1}, ["tpu", "cpu", "gpu"]),
    (("resources",), {"gpu": -1}, ["resources.gpu", ">= 0"]),
    (("max_failures",), "two", ["max_failures", "int"]),
    (("name",), "has spaces!", ["name"]),
    (("nmae",), "x", ["nmae", "valid keys"]),
    (("stages",), {}, ["stages", "non-empty"]),
    (("config", "seed"), {"grid": [0], "choice": [1]}, ["seed", "axis"]),
    (("stages", "identify", "config", "subset_size"), 5, ["subset_size", ">= 10"]),
    (("max_trials",), 3, ["max_trials", "trials"]),
    (("stages", "identify", "config", "noise_kind"), "asym", ["noise_kind", "uniform", "pair"]),
    # cases axes: a union of grids
    (("config", "noise"), {"cases": [{"noise_kind": "asym"}]}, ["noise_kind", "asym", "pair"]),
    (("config", "noise"), {"cases": [{"noise_ratio": {"grid": [0.1, 1.4]}}]},
     ["noise.cases[0]", "noise_ratio", "[0, 1]"]),
    (("config", "noise"), {"cases": []}, ["noise", "non-empty list"]),
    (("config", "noise"), {"cases": [{}]}, ["noise", "non-empty"]),
    (("config", "noise"), {"cases": [{"noise_ratio": {"choice": [0.1]}}]}, ["noise_ratio", "grid"]),
    (("config", "noise"), {"cases": [{"nosie_kind": "pair"}]}, ["noise", "nosie_kind", "no stage"]),
    (("stages", "identify", "config", "noise_ratio"), {"cases": [{"noise_kind": "pair"}]},
     ["noise_ratio", "not a config key"]),
    (("stages", "identify", "config", "noise"), {"cases": [{"strategy": "energy"}]},
     ["strategy", "also set"]),
]


@pytest.mark.parametrize("where,value,words", BAD, ids=[".".join(map(str, b[0])) + "=" + str(b[1])[:20]
                                                        for b in BAD])
def test_bad_sweep_refused_with_key_named(where, value, words):
    with pytest.raises(ConfigError) as err:
        sweeps.validate(_with(where, value))
    for word in words:
        assert word in str(err.value), str(err.value)


@pytest.mark.parametrize("text,words", [
    ("- just\n- a list\n", ["mapping"]),
    ("name: [unclosed\n", ["not valid YAML"]),
    ("name: x\nexperiment: identify\nstages: {a: {experiment: identify}}\n", ["both"]),
    ("name: x\n", ["neither"]),
])
def test_malformed_files(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        sweeps.load(path)
    for word in words:
        assert word in str(err.value)


def test_cli_refuses_before_ray_starts(tmp_path, capsys):
    import ray

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with(("stages", "identify", "config", "noise_ratio"), 3)))
    assert main(["run", str(path), "--no-dashboard"]) == 2
    err = capsys.readouterr().err
    assert "noise_ratio" in err and "[0, 1]" in err
    assert not ray.is_initialized()
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert main(["run", str(path), "--set", "noise_ratio"]) == 2


def test_set_overrides_wherever_the_key_is_set():
    raw = sweeps.apply_overrides(GOOD, ["seed=3", "epochs=7", "imbalance.train_ratio=0.7"])
    assert raw["config"]["seed"] == 3
    assert raw["config"]["epochs"] == 7                      # set nowhere: joins shared config
    assert raw["stages"]["imbalance"]["config"]["train_ratio"] == 0.7
    assert GOOD["config"]["seed"] == {"grid": [0, 1]}        # the original is untouched


def test_cases_axis_is_a_union_of_grids_crossed_with_the_other_axes():
    raw = _with(("config", "noise"), {"cases": [
        {"noise_kind": "uniform", "noise_ratio": {"grid": [0.0, 0.1, 0.2, 0.4]}},
        {"noise_kind": "pair", "noise_ratio": {"grid": [0.2, 0.4]}}]})
    sweep = sweeps.validate(raw)
    counts = sweeps.planned_counts(sweep)
    assert counts == {"identify": 2 * 2 * 6, "imbalance": 2 * 2 * 6 * 2}
    specs = sweeps.plan(sweep)["identify"]
    cells = {(s.config["noise_kind"], s.config["noise_ratio"]) for s in specs}
    assert cells == {("uniform", 0.0), ("uniform", 0.1), ("uniform", 0.2), ("uniform", 0.4),
                     ("pair", 0.2), ("pair", 0.4)}          # no pair at 0 or 0.1
    assert len(specs) == len({json.dumps(s.config, sort_keys=True) for s in specs})
    # a later stage joins on the noise keys too: same kind, same ratio
    for spec in sweeps.plan(sweep)["imbalance"]:
        assert spec.config["noise_kind"] in ("uniform", "pair")
    assert len({(s.config["seed"], s.config["noise_kind"], s.config["noise_ratio"],
                 s.params["identify.strategy"], s.config["train_ratio"])
                for s in sweeps.plan(sweep)["imbalance"]}) == 48
    # --set replaces the key inside every case (repeats collapse), and a stage's own key
    # wins over the shared cases' value
    raw_set = sweeps.apply_overrides(raw, ["noise_ratio=0.2"])
    assert "noise_ratio" not in raw_set["config"]
    one = sweeps.validate(raw_set)
    assert sweeps.planned_counts(one)["identify"] == 2 * 2 * 2
    own = _with(("config", "noise"), raw["config"]["noise"])
    own["stages"]["identify"]["config"]["noise_kind"] = "pair"
    specs = sweeps.plan(sweeps.validate(own))["identify"]
    assert {(s.config["noise_kind"], s.config["noise_ratio"]) for s in specs} == {
        ("pair", r) for r in (0.0, 0.1, 0.2, 0.4)}


def test_stage_join_pairs_each_cell_with_matching_identify_trials():
    sweep = sweeps.validate(GOOD)
    counts = sweeps.planned_counts(sweep)
    assert counts == {"identify": 4, "imbalance": 8}       # 2 cells x (2 strategies) per seed
    specs = sweeps.plan(sweep)["imbalance"]
    for spec in specs:
        assert spec.params["identify.strategy"] in ("stragglers", "energy")
        assert spec.config["seed"] in (0, 1)
    assert len({(s.config["seed"], s.params["identify.strategy"], s.config["train_ratio"])
                for s in specs}) == 8


def test_smoke_shrinks_every_stage():
    path = REPO / "sweeps" / "demo.yaml"
    sweep = sweeps.load(path, smoke=True)
    for stage in sweep.stages:
        assert stage.config["subset_size"] == 300
        assert stage.config["epochs"] <= 40


def test_a_key_set_on_the_command_line_beats_smoke():
    path = REPO / "sweeps" / "demo.yaml"
    sweep = sweeps.load(path, smoke=True, overrides=["identify.epochs=55", "subset_size=400"])
    assert sweep.stage("identify").config["epochs"] == 55
    assert sweep.stage("imbalance").config["epochs"] <= 40        # the rest still shrinks
    assert all(stage.config["subset_size"] == 400 for stage in sweep.stages)


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_validate(path):
    sweeps.load(path)
    sweeps.load(path, smoke=True)


def test_shared_keys_a_stage_ignores_are_named(tmp_path, capsys):
    raw = {"name": "ignored", "config": {"dataset": "blobs", "weight_decay": 0.01, "seed": 0},
           "stages": {"dyn": {"experiment": "dynamics"},
                      "ident": {"experiment": "identify"},
                      "base": {"experiment": "train_classifier"}}}
    sweep = sweeps.validate(raw)
    # identify trains full-batch plain SGD: no weight decay; every stage takes seed/dataset
    assert sweep.ignored == {"weight_decay": ["ident"]}
    assert sweep.stage("base").config["weight_decay"] == 0.01
    path = tmp_path / "ignored.yaml"
    path.write_text(yaml.safe_dump(raw))
    for argv in (["validate", str(path)], ["run", str(path), "--dry-run"]):
        assert main(argv) == 0
        notes = [line for line in capsys.readouterr().out.splitlines() if "ignored" in line
                 and "note" in line]
        assert notes == ["raydiff: note: config key 'weight_decay' is ignored by stage "
                         "ident (identify)"]
    assert sweeps.validate({**raw, "stages": {"dyn": {"experiment": "dynamics"}}}).ignored == {}
    # keys ignored by the same stages share one line
    both = sweeps.validate({**raw, "config": {**raw["config"], "momentum": 0.9}})
    assert sweeps.ignored_lines(both) == [
        "raydiff: note: config keys 'weight_decay', 'momentum' are ignored by stage ident (identify)"]
