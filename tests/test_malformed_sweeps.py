"""Malformed sweep files thrown at `raydiff run`: each is refused with a message naming the
bad key, exit code 2, and Ray is never started (not even imported)."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

BASE = {
    "name": "bad-input",
    "resources": {"cpu": 1, "gpu": 0.25},
    "max_failures": 1,
    "config": {"dataset": "mnist5k", "seed": {"grid": [0, 1]}},
    "stages": {
        "identify": {"experiment": "identify",
                     "config": {"strategy": {"grid": ["stragglers", "energy"]},
                                "noise_ratio": 0.2}},
        "imbalance": {"experiment": "imbalance", "after": "identify",
                      "config": {"train_ratio": {"grid": [0.9, 0.5]}}},
    },
}
SINGLE = {"name": "bad-single", "experiment": "train_classifier",
          "config": {"dataset": "blobs", "epochs": 10, "seed": {"grid": [0, 1, 2]}}}
DELETE = object()
ID, IM, TC = ("stages", "identify", "config"), ("stages", "imbalance", "config"), ("config",)

# (what is set where, words the message must contain); the base sweep otherwise valid
MUTATIONS = [
    # unknown keys
    (("nmae",), "x", ["nmae", "valid keys"]),
    (("stages", "identify", "colour"), "red", ["colour", "valid keys"]),
    ((*ID, "strat"), "energy", ["strat", "valid keys", "strategy"]),
    ((*IM, "ratio"), 0.5, ["ratio", "valid keys", "train_ratio"]),
    (("config", "sed"), 1, ["sed", "valid keys"]),
    (("resources",), {"cpu": 1, "tpu": 1}, ["tpu", "cpu", "gpu"]),
    (("stages", "identify", "search"), {"metric": "n_hard", "mode": "max", "trials": 3},
     ["trials", "search"]),
    # wrong types
    ((*ID, "epochs"), "many", ["epochs", "int"]),
    ((*ID, "epochs"), 2.5, ["epochs", "int"]),
    ((*ID, "epochs"), True, ["epochs", "int"]),
    ((*ID, "hidden"), 20, ["hidden", "list"]),
    ((*ID, "hidden"), ["a", "b"], ["hidden", "list"]),
    ((*ID, "lr"), "fast", ["lr", "float"]),
    ((*IM, "reduce_hard"), "yes", ["reduce_hard", "bool"]),
    ((*IM, "models_per_cell"), [3], ["models_per_cell", "int"]),
    (("config", "seed"), "zero", ["seed", "int"]),
    (("config", "seed"), {"grid": [0, "one"]}, ["seed", "int"]),
    (("config", "subset_seed"), 1.5, ["subset_seed", "int"]),
    (("config", "download"), "please", ["download", "bool"]),
    (("max_failures",), "two", ["max_failures", "int"]),
    (("max_failures",), 1.5, ["max_failures", "int"]),
    (("num_samples",), "ten", ["num_samples", "int"]),
    (("resources",), [1, 0.25], ["resources", "mapping"]),
    (("resources",), {"cpu": "one"}, ["resources.cpu", "number"]),
    (("name",), 7, ["name"]),
    (("name",), "has spaces!", ["name"]),
    (("config",), ["dataset", "mnist5k"], ["config", "mapping"]),
    (("stages", "identify", "after"), 3, ["after"]),
    (("stages",), ["identify", "imbalance"], ["stages", "mapping"]),
    (("stages", "identify"), "identify", ["identify", "mapping"]),
    # values outside their range: ratios, negatives, unknown names
    ((*ID, "noise_ratio"), 1.5, ["noise_ratio", "[0, 1]"]),
    ((*ID, "noise_ratio"), -0.1, ["noise_ratio", "[0, 1]"]),
    ((*IM, "train_ratio"), {"grid": [0.9, 2]}, ["train_ratio", "[0, 1]"]),
    ((*IM, "train_ratio"), -0.5, ["train_ratio", "[0, 1]"]),
    ((*IM, "remaining_train_ratio"), 1.01, ["remaining_train_ratio", "[0, 1]"]),
    ((*IM, "train_ratio"), 0, ["train_ratio"]),
    ((*ID, "epochs"), -5, ["epochs", ">= 1"]),
    ((*ID, "epochs"), 0, ["epochs", ">= 1"]),
    ((*ID, "subset_size"), 5, ["subset_size", ">= 10"]),
    ((*ID, "check_every"), 0, ["check_every", ">= 1"]),
    (("max_failures",), -1, ["max_failures", ">= 0"]),
    (("num_samples",), 0, ["num_samples", ">= 1"]),
    (("resources",), {"gpu": -1}, ["resources.gpu", ">= 0"]),
    (("resources",), {"cpu": -2}, ["resources.cpu", ">= 0"]),
    (("resources",), {"gpu": 1.5}, ["resources.gpu", "fractions"]),
    (("resources",), {"cpu": 0, "gpu": 0}, ["resources", "nothing"]),
    (("config", "dataset"), "imagenet22k", ["dataset", "mnist5k", "CIFAR10"]),
    ((*ID, "model"), "vit", ["model", "simple_nn"]),
    ((*ID, "strategy"), "loss", ["strategy", "stragglers", "energy"]),
    ((*ID, "strategy"), {"grid": ["energy", "bogus"]}, ["bogus", "confidence"]),
    ((*ID, "level"), "pixel", ["level", "dataset", "class"]),
    (("stages", "identify", "experiment"), "identfy", ["identfy", "imbalance"]),
    # empty grids and malformed axes
    ((*IM, "train_ratio"), {"grid": []}, ["train_ratio", "non-empty"]),
    (("config", "seed"), {"grid": []}, ["seed", "non-empty"]),
    ((*ID, "strategy"), {"choice": []}, ["strategy", "non-empty"]),
    (("config", "seed"), {"grid": 3}, ["seed", "non-empty list"]),
    (("config", "seed"), {"grid": [0], "choice": [1]}, ["seed", "axis"]),
    ((*ID, "lr"), {"uniform": [0.01, 0.1]}, ["lr", "search"]),
    # missing stages, broken stage graphs
    (("stages", "imbalance", "after"), "scoring", ["scoring", "missing stage"]),
    (("stages", "imbalance", "after"), DELETE, ["imbalance", "after"]),
    (("stages", "identify", "after"), "imbalance", ["cannot take"]),
    (("stages",), {}, ["stages", "non-empty"]),
    (("stages",), DELETE, ["experiment", "stages", "neither"]),
    (("experiment",), "identify", ["both"]),
    (("name",), DELETE, ["name"]),
    # a grid over the limit, which the user can raise
    (("max_trials",), 3, ["max_trials", "raise max_trials"]),
    (("config", "seed"), {"grid": list(range(3000))}, ["6000 trials", "max_trials=5000"]),
]
TEXTS = [   # files that are no sweep at all: (text, words)
    ("- just\n- a list\n", ["YAML mapping", "list"]),
    ("just a sentence\n", ["YAML mapping", "str"]),
    ("42\n", ["YAML mapping", "int"]),
    ("", ["YAML mapping", "NoneType"]),
    ("name: [unclosed\n", ["not valid YAML"]),
    ("name: x\n  experiment: identify\n\tconfig: {}\n", ["not valid YAML"]),
    ("name: x\n", ["neither"]),
    ("!!python/object/apply:os.system ['echo pwned']\n", ["not valid YAML"]),   # no unsafe tags
]


def _mutated(base, where, value):
    raw = yaml.safe_load(yaml.safe_dump(base))
    *parents, last = where
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return raw


SINGLE_MUTATIONS = [
    ((*TC, "checkpoint_every"), 0, ["checkpoint_every", ">= 1"]),
    ((*TC, "epoch_seconds"), -1.0, ["epoch_seconds", ">= 0"]),
    ((*TC, "batch_size"), "all", ["batch_size", "int or null"]),
    (("experiment",), "train_classifer", ["train_classifer", "train_classifier"]),
    (("config", "seed"), {"grid": list(range(6000))}, ["6000 trials", "raise max_trials"]),
]


def _cases(tmp_path):
    cases = []
    for i, (where, value, words) in enumerate(MUTATIONS):
        cases.append((yaml.safe_dump(_mutated(BASE, where, value)), words))
    for where, value, words in SINGLE_MUTATIONS:
        cases.append((yaml.safe_dump(_mutated(SINGLE, where, value)), words))
    cases += TEXTS
    files = []
    for i, (text, words) in enumerate(cases):
        path = tmp_path / f"bad{i:03d}.yaml"
        path.write_text(text)
        files.append((str(path), words))
    return files


DRIVER = """
import contextlib, io, json, sys
from raydiff.cli import main
out = []
for path in sys.argv[1:]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", path, "--no-dashboard"])
    out.append({"path": path, "code": code, "err": err.getvalue()})
print(json.dumps({"results": out, "ray_imported": "ray" in sys.modules}))
"""


def test_malformed_sweeps_refused_before_ray(tmp_path):
    files = _cases(tmp_path)
    assert len(files) >= 50
    # one process for all files: `raydiff run` as the user calls it, minus 80 interpreter starts
    done = subprocess.run([sys.executable, "-c", DRIVER, *[p for p, _ in files]],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["ray_imported"]                # validation never reached Ray
    assert not (tmp_path / "mlflow.db").exists()     # nor the tracking store
    for (path, words), result in zip(files, report["results"]):
        assert result["code"] == 2, (path, result)
        message = result["err"]
        assert message.startswith("raydiff: error:") and "Traceback" not in message, message
        for word in words:
            assert word in message, (open(path).read()[:300], message)


def test_the_limit_on_trials_can_be_raised(tmp_path):
    from raydiff.experiments.config import ConfigError
    from raydiff.tune import sweep as sweeps

    raw = {**BASE, "max_trials": 11}                # 4 identify + 8 imbalance trials
    with pytest.raises(ConfigError, match="12 trials.*raise max_trials"):
        sweeps.validate(raw)
    assert sum(sweeps.planned_counts(sweeps.validate({**raw, "max_trials": 12})).values()) == 12


def test_the_base_sweeps_are_valid(tmp_path):
    from raydiff.tune import sweep as sweeps

    assert sweeps.planned_counts(sweeps.validate(BASE)) == {"identify": 4, "imbalance": 8}
    assert sweeps.planned_counts(sweeps.validate(SINGLE)) == {"main": 3}
    assert (REPO / "sweeps").is_dir()
