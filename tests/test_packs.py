"""Packs in sweeps: which configs share a trial, and that a packed config gives what it
gives alone (per experiment), fails alone, and keeps its own MLflow run."""

import numpy as np
import pandas as pd
import pytest
import torch

from raydiff.data import load_dataset
from raydiff.experiments import (crossval, dynamics, identify, imbalance, inversion,
                                 train_classifier)
from raydiff.experiments._packs import Diverged
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import ConfigError, build_config
from raydiff.tune import packs
from raydiff.tune import sweep as sweeps
from raydiff.tune.spec import TrialSpec

import rounding


pytestmark = pytest.mark.usefixtures("one_thread")


# -- grouping -----------------------------------------------------------------------------

def _groups(raw, size=None, slots=1):
    sweep = sweeps.validate(raw)
    stage = sweep.stages[0]
    own, _ = sweeps.expand_own(stage)
    specs = sweeps.join(stage, own, {})
    configs = [sweeps.resolved(stage, s.config) for s in specs]
    groups = packs.make_packs(specs, stage.module, configs, size or stage.pack,
                              resources=stage.resources, slots=slots)
    return [[configs[i] for i in g] for g in groups]


IDENTIFY = {"name": "p", "experiment": "identify",
            "config": {"seed": {"grid": [0, 1, 2]}, "strategy": {"grid": ["stragglers", "energy"]},
                       "epochs": {"grid": [40, 60]}, "inversion_start": 5, "check_every": 2}}


def test_configs_equal_outside_the_pack_keys_share_a_pack():
    groups = _groups(IDENTIFY)
    # seed x strategy stack; epochs (the shape of training) does not
    assert sorted(len(g) for g in groups) == [6, 6]
    for g in groups:
        assert len({c["epochs"] for c in g}) == 1
        assert {(c["seed"], c["strategy"]) for c in g} == {
            (s, t) for s in (0, 1, 2) for t in ("stragglers", "energy")}


def test_pack_size_splits_and_one_is_todays_behaviour():
    assert sorted(len(g) for g in _groups({**IDENTIFY, "pack": 4})) == [2, 2, 4, 4]
    assert [len(g) for g in _groups(IDENTIFY, size=1)] == [1] * 12
    staged = {"name": "p", "config": {"inversion_start": 5, "check_every": 2},
              "stages": {"identify": {"experiment": "identify", "pack": 5,
                                      "config": {"seed": {"grid": list(range(7))}, "epochs": 40}}}}
    assert sorted(len(g) for g in _groups(staged)) == [2, 5]


def test_auto_packs_to_the_model_cap_counting_each_configs_models():
    raw = {"name": "p", "experiment": "identify",
           "config": {"seed": {"grid": list(range(70))}, "epochs": 40, "inversion_start": 5,
                      "check_every": 2}}
    assert sorted(len(g) for g in _groups(raw)) == [6, packs.CPU_MAX_MODELS]
    # confidence under noise trains two models per config: half as many configs fit
    raw["config"].update(noise_ratio=0.1, strategy="confidence")
    assert max(len(g) for g in _groups(raw)) == packs.CPU_MAX_MODELS // 2


def test_auto_packs_leave_no_slot_of_the_cluster_idle():
    # 12 configs in two packs of 6 would run two at a time: on 4 slots, four packs of 3
    assert sorted(len(g) for g in _groups(IDENTIFY, slots=4)) == [3, 3, 3, 3]
    five = [len(g) for g in _groups(IDENTIFY, slots=5)]
    assert len(five) == 5 and max(five) == 3 and sum(five) == 12
    # never below one config a pack; an explicit size is taken as it is
    assert len(_groups(IDENTIFY, slots=50)) == 12
    assert sorted(len(g) for g in _groups({**IDENTIFY, "pack": 6}, slots=4)) == [6, 6]
    assert packs.spread([[0, 1, 2, 3, 4]], 2) == [[0, 1, 2], [3, 4]]


def test_unpackable_configs_get_a_trial_of_their_own():
    raw = {"name": "p", "experiment": "train_classifier",
           "config": {"seed": {"grid": [0, 1]}, "model": {"grid": ["simple_nn", "small_cnn"]},
                      "augment": {"grid": [False, True]}}}
    groups = _groups(raw)
    packed = [g for g in groups if len(g) > 1]
    assert len(packed) == 1 and all(c["model"] == "simple_nn" and not c["augment"]
                                    for c in packed[0])
    assert len(groups) == 1 + 6                 # the six others alone


@pytest.mark.parametrize("where, raw", [
    ("p: pack", {"pack": 0}), ("p: pack", {"pack": "many"}), ("p: pack", {"pack": True}),
    ("stages.s: pack", {"stages": {"s": {"experiment": "identify", "pack": -2}}}),
])
def test_bad_pack_values_are_refused_naming_the_key(where, raw):
    base = {"name": "p", "experiment": "identify"} if "stages" not in raw else {"name": "p"}
    with pytest.raises(ConfigError, match=rf"{where} must be an int >= 1 .* or 'auto'"):
        sweeps.validate({**base, **raw}, source="p")


def test_the_cli_refuses_a_bad_pack_flag():
    from raydiff.cli import _pack_arg
    assert _pack_arg("3") == 3 and _pack_arg("auto") == "auto" and _pack_arg(None) is None
    with pytest.raises(ConfigError, match="--pack must be an int"):
        _pack_arg("0")


def test_a_pack_trial_is_named_for_what_it_stacks():
    configs = [TrialSpec("identify", "identify", {}, {"strategy": st, "noise_ratio": nr,
                                                      "epochs": 40}, name=f"identify s={s}")
               for s, (st, nr) in enumerate([("stragglers", 0.0), ("energy", 0.1),
                                             ("energy", 0.0)])]
    spec = packs.pack_spec("identify", configs, {"strategy": "strategy", "noise_ratio": "noise",
                                                 "epochs": "epochs"})
    assert packs.is_pack(spec) and spec.configs == configs
    assert spec.name == "identify pack of 3 (strategy x noise)"
    assert spec.params["epochs"] == 40 and spec.params["strategy"] == "2 values"


# -- packed == alone, per experiment --------------------------------------------------------

@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist5k")


def _both(module, configs, data, tmp_path, upstream=None):
    """(metrics alone, per config; outcomes packed) with per-config Reports under tmp_path."""
    def report(tag, i):
        return Report(tmp_path / f"{tag}{i}", upstream=upstream[i] if upstream else None)
    alone = [module.run(c, report("a", i), data) for i, c in enumerate(configs)]
    packed = module.run_pack(configs, [report("p", i) for i in range(len(configs))], data)
    return alone, packed


def _same_table(tmp_path, i, name="per_sample.parquet", columns=None, tol=1e-5):
    a, p = (pd.read_parquet(tmp_path / f"{t}{i}" / name) for t in "ap")
    assert list(a.columns) == list(p.columns)
    if "sample_id" in a:
        assert (a["sample_id"] == p["sample_id"]).all()
    for col in columns or [c for c in a.columns if c.startswith("score")]:
        np.testing.assert_allclose(p[col].to_numpy(float), a[col].to_numpy(float), atol=tol,
                                   err_msg=f"config {i} column {col}")
    if "hard" in a:
        # scores within ``tol`` of the top-k cut may trade places; nothing else may
        rounding.assert_topk_equal_up_to_ties(a["hard"], p["hard"], a["score"], p["score"],
                                              tol, what=f"config {i} hard")


INV = {"subset_size": 150, "epochs": 30, "inversion_start": 5, "check_every": 2}


def test_identify_packed_equals_alone(data, tmp_path):
    configs = [build_config(identify.Config, {**INV, "seed": s, "noise_ratio": nr,
                                              "strategy": st, "level": lv})
               for s, nr, st, lv in [(0, 0.0, "stragglers", "dataset"), (1, 0.2, "energy", "class"),
                                     (1, 0.2, "confidence", "dataset"), (2, 0.1, "stragglers", "class")]]
    alone, packed = _both(identify, configs, data, tmp_path)
    for i in range(len(configs)):
        assert packed[i]["attempts"] == alone[i]["attempts"]
        assert packed[i]["n_hard"] == alone[i]["n_hard"]
        _same_table(tmp_path, i)
    # the clean-label training (energy and confidence of seed 1 share it) gives the same k
    assert packed[1]["k_clean_total"] == alone[1]["k_clean_total"] == packed[2]["k_clean_total"]


def test_inversion_packed_equals_alone(data, tmp_path):
    configs = [build_config(inversion.Config, {**INV, "seed": s, "noise_ratio": nr})
               for s, nr in [(0, 0.0), (3, 0.2), (5, 0.1)]]
    alone, packed = _both(inversion, configs, data, tmp_path)
    for i in range(len(configs)):
        assert packed[i]["classes_never_inverted"] == alone[i]["classes_never_inverted"]
        _same_table(tmp_path, i, columns=["score", "straggler_margin", "learned_epoch"])
        _same_table(tmp_path, i, "radii.parquet", columns=["radius", "centroid_distance_mean"])


def test_imbalance_packed_equals_alone(data, tmp_path):
    up = build_config(identify.Config, {**INV, "epochs": 40, "noise_ratio": 0.1,
                                        "strategy": "confidence", "max_retries": 4})
    identify.run(up, Report(tmp_path / "identify"), data)
    table = pd.read_parquet(tmp_path / "identify" / "per_sample.parquet")
    table["hard"] = table["hard"].fillna(False)        # a never-inverted class: decide it easy
    table.to_parquet(tmp_path / "identify" / "per_sample.parquet")
    configs = [build_config(imbalance.Config, {"subset_size": 150, "epochs": 30, "seed": s,
                                               "remaining_train_ratio": r, "reduce_hard": rh,
                                               "models_per_cell": m, "lr": lr})
               for s, r, rh, m, lr in [(0, 1.0, False, 2, 0.1), (1, 0.5, True, 1, 0.05),
                                       (2, 0.0, True, 3, 0.1)]]
    upstream = [{"identify": Upstream(tmp_path / "identify")} for _ in configs]
    alone, packed = _both(imbalance, configs, data, tmp_path, upstream)
    for i in range(len(configs)):
        a, p = (pd.read_parquet(tmp_path / f"{t}{i}" / "models.parquet") for t in "ap")
        pd.testing.assert_frame_equal(a, p, atol=1e-5)
        assert packed[i]["n_train"] == alone[i]["n_train"]


MINI = {"subset_size": 200, "epochs": 3, "batch_size": 32, "lr_milestones": [2]}


def test_train_classifier_packed_equals_alone(data, tmp_path):
    configs = [build_config(train_classifier.Config, {**MINI, "seed": s, "noise_ratio": nr,
                                                      "lr": lr, "weight_decay": wd})
               for s, nr, lr, wd in [(0, 0.0, 0.1, 0.0), (1, 0.3, 0.05, 5e-4), (2, 0.1, 0.1, 1e-3)]]
    alone, packed = _both(train_classifier, configs, data, tmp_path)
    for i in range(len(configs)):
        _same_table(tmp_path, i)
        assert packed[i]["train_accuracy"] == pytest.approx(alone[i]["train_accuracy"], abs=1e-6)


def test_crossval_packed_equals_alone(data, tmp_path):
    configs = [build_config(crossval.Config, {**MINI, "model": "simple_nn", "folds": 3,
                                              "seed": s, "noise_ratio": nr, "fold": f})
               for s, nr, f in [(0, 0.2, 0), (0, 0.2, 1), (0, 0.2, 2), (4, 0.0, 1)]]
    alone, packed = _both(crossval, configs, data, tmp_path)
    for i in range(len(configs)):
        assert packed[i]["oof_epoch"] == alone[i]["oof_epoch"]
        _same_table(tmp_path, i, "oof.parquet", columns=[f"p_{c}" for c in range(10)])


def test_dynamics_packed_equals_alone(data, tmp_path):
    configs = [build_config(dynamics.Config, {**MINI, "model": "simple_nn", "el2n_epoch": 2,
                                              "seed": s, "noise_ratio": nr, "method": m})
               for s, nr, m in [(0, 0.1, "aum"), (1, 0.3, "el2n"), (2, 0.2, "forgetting")]]
    alone, packed = _both(dynamics, configs, data, tmp_path)
    for i, config in enumerate(configs):
        _same_dynamics(tmp_path, i, epochs=config.epochs)


def _same_dynamics(tmp_path, i, *, epochs):
    """Packed and single dynamics runs differ in float rounding only, and their training
    logits are stored as float16: each score may move as far as the stored logits' rounding
    lets it (tests/rounding.py derives the bounds), no further."""
    a_logits, p_logits = (np.load(tmp_path / f"{t}{i}" / "dynamics_logits.npy").astype(np.float64)
                          for t in "ap")
    tol = rounding.stored_logit_tolerance(a_logits, p_logits)
    assert (np.abs(a_logits - p_logits) <= tol).all(), f"config {i}: stored logits"
    score_tol = rounding.SCORE_LIPSCHITZ * float(tol.max())
    may_flip = rounding.near_tie(a_logits, 2 * float(tol.max()))
    a, p = (pd.read_parquet(tmp_path / f"{t}{i}" / "per_sample.parquet") for t in "ap")
    assert list(a.columns) == list(p.columns) and (a["sample_id"] == p["sample_id"]).all()
    for col in [c for c in a.columns if c.startswith(("score", "carto_"))]:
        va, vp = a[col].to_numpy(float), p[col].to_numpy(float)
        off = np.abs(va - vp) > score_tol
        if rounding.is_discrete(va, epochs):         # argmax-based: flips only at near-ties
            off &= ~may_flip
        assert not off.any(), (f"config {i} column {col}: samples {np.flatnonzero(off)[:10]} "
                               f"differ by {np.abs(va - vp)[off].max()} > {score_tol}")
    rounding.assert_topk_equal_up_to_ties(a["hard"], p["hard"], a["score"], p["score"],
                                          score_tol, what=f"config {i} hard")


# -- a pack checkpoints as one unit ------------------------------------------------------------

class _Killed(Exception):
    pass


class _Dying(Report):
    """A report whose process "dies" when epoch ``die_at`` reports its loss."""

    die_at = None

    def __call__(self, metrics, *, step=None, checkpoint=None):
        if step is not None and step == self.die_at:
            raise _Killed(step)
        super().__call__(metrics, step=step, checkpoint=checkpoint)


RESUMABLE = [
    (train_classifier, train_classifier.Config, {}, "per_sample.parquet", None),
    (crossval, crossval.Config, {"model": "simple_nn", "folds": 2, "fold": 1}, "oof.parquet",
     [f"p_{c}" for c in range(10)]),
    (dynamics, dynamics.Config, {"model": "simple_nn", "el2n_epoch": 1, "el2n_runs": 2},
     "per_sample.parquet", None),
]


@pytest.mark.parametrize("module, cls, extra, table, columns", RESUMABLE,
                         ids=[m[0].NAME for m in RESUMABLE])
def test_a_killed_pack_resumes_from_its_checkpoint_and_ends_as_an_unkilled_one(
        data, tmp_path, module, cls, extra, table, columns):
    from raydiff.experiments.base import PackCheckpoint

    values = {**MINI, "epochs": 5, "checkpoint_every": 2, **extra}
    configs = [build_config(cls, {**values, "seed": s, "noise_ratio": nr})
               for s, nr in [(0, 0.2), (1, 0.1)]]

    def reports(tag, resume_state=None, die_at=None):
        ckpt = PackCheckpoint(tmp_path / f"{tag}-pack", resume_state=resume_state)
        out = [_Dying(tmp_path / f"{tag}{i}") for i in range(len(configs))]
        for r in out:
            r.pack_checkpoint, r.die_at = ckpt, die_at
        return out

    straight = module.run_pack(configs, reports("a"), data)
    killed = reports("k", die_at=4)
    with pytest.raises(_Killed):
        module.run_pack(configs, killed, data)
    assert killed[0].pack_checkpoint.saved == [2]
    resumed = reports("p", resume_state=killed[0].pack_checkpoint.load())
    again = module.run_pack(configs, resumed, data)
    for i in range(len(configs)):
        assert resumed[i].tags["raydiff.resumed_from_epoch"] == "2"
        assert [s for s, m in resumed[i].history if "loss" in m] == [3, 4, 5]
        _same_table(tmp_path, i, table, columns=columns, tol=1e-6)
        if module is train_classifier:      # as run's: the epochs this attempt trained
            assert (again[i]["start_epoch"], again[i]["epochs_run"]) == (2, 3)
        else:
            assert again[i]["epochs_run"] == straight[i]["epochs_run"] == 5


def test_a_pack_checkpoint_is_used_only_for_the_configs_it_was_saved_for():
    from raydiff.tune.trainable import _pack_resume_state
    saved = {"pack_configs": [0, 2, 3], "pack": {"epoch": 4}}
    assert _pack_resume_state(saved, [0, 2, 3]) == ({"epoch": 4}, None)
    state, why = _pack_resume_state(saved, [2, 3])         # config 0 finished since
    assert state is None and "restarting those from scratch" in why
    assert _pack_resume_state(None, [0]) == (None, None)
    # a checkpoint saved before the typed trial contract names its configs "pack_members"
    assert _pack_resume_state({"pack_members": [0, 2], "pack": {"epoch": 3}}, [0, 2]) == \
        ({"epoch": 3}, None)


def test_specs_of_sessions_started_before_the_kind_field_still_resume():
    """Tune's saved state of an older session holds the trial dicts as they were then:
    --resume reads them as the specs they stand for."""
    from raydiff.tune.spec import PackSpec, TrialSpec, from_tune, tune_value
    one = {"stage": "main", "experiment": "train_classifier", "config": {"seed": 1},
           "params": {"seed": 1}, "upstream": {}, "name": "train_classifier seed=1"}
    two = dict(one, config={"seed": 2}, params={"seed": 2}, name="train_classifier seed=2")
    assert from_tune({"trial": dict(one)}) == TrialSpec(**one)
    old_pack = {"stage": "main", "experiment": "train_classifier",
                "name": "main pack of 2 (seed)", "params": {"seed": "2 values"},
                "pack": [one, two], "pack_digest": "0123abcd"}
    pack = from_tune({"trial": old_pack})
    assert pack == PackSpec("main", "train_classifier", "main pack of 2 (seed)",
                            {"seed": "2 values"}, [TrialSpec(**one), TrialSpec(**two)],
                            "0123abcd")
    assert from_tune({"trial": tune_value(pack)}) == pack          # and today's round trip


# -- isolation --------------------------------------------------------------------------------

def test_a_diverging_config_fails_alone_and_the_others_keep_their_numbers(data, tmp_path):
    good = [build_config(train_classifier.Config, {**MINI, "seed": s, "noise_ratio": 0.2})
            for s in (0, 1)]
    bad = build_config(train_classifier.Config, {**MINI, "seed": 2, "noise_ratio": 0.2,
                                                 "lr": 1e37})
    configs = [good[0], bad, good[1]]
    packed = train_classifier.run_pack(configs, [Report(tmp_path / f"p{i}") for i in range(3)],
                                       data)
    assert isinstance(packed[1], Diverged) and "NaN or infinite" in str(packed[1])
    assert not (tmp_path / "p1" / "per_sample.parquet").exists()
    for j, i in ((0, 0), (1, 2)):
        train_classifier.run(good[j], Report(tmp_path / f"a{i}"), data)
        _same_table(tmp_path, i)


# -- end to end: real Ray, real MLflow, the driver killed between packs ----------------------

# identify: 2 seeds x 2 strategies in packs of 2; imbalance after it (every config finds its
# own identify run), half of its cells with an lr that diverges (the last stage: a failed
# config skips nothing after it). One CPU: the packs run in turn.
E2E = {"name": "packs", "resources": {"cpu": 1},
       "config": {"subset_size": 150, "noise_ratio": 0.1, "seed": {"grid": [0, 1]}},
       "stages": {
           "identify": {"experiment": "identify", "pack": 2,
                        "config": {"epochs": 30, "inversion_start": 5, "check_every": 2,
                                   "max_retries": 0, "judge_by_final_model": True,
                                   "strategy": {"grid": ["stragglers", "energy"]}}},
           "imbalance": {"experiment": "imbalance", "after": "identify",
                         "config": {"epochs": 20, "models_per_cell": 1,
                                    "runs": {"cases": [{"remaining_train_ratio": 1.0},
                                                       {"remaining_train_ratio": 0.5,
                                                        "lr": 1.0e37}]}}}}}


@pytest.mark.slow
def test_a_packed_sweep_keeps_one_run_per_config_and_resumes_without_redoing(tmp_path):
    import os
    import signal

    import yaml
    from conftest import RAYDIFF
    from procs import Proc, wait_until
    from raydiff import tracking

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(E2E))
    args = RAYDIFF + ["run", "s.yaml", "--num-cpus", "1", "--no-dashboard"]
    client = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}").client

    def runs():
        exp = tracking.retrying(client.get_experiment_by_name, "packs")
        if exp is None:
            return []
        return tracking.retrying(client.search_runs, [exp.experiment_id],
                                 "tags.`raydiff.kind` = 'trial'")

    driver = Proc(args, log=tmp_path / "driver.log", cwd=tmp_path)
    try:
        def first_pack_done():
            return sum(r.info.status == "FINISHED" for r in runs()) >= 2
        wait_until(first_pack_done, 400, "a pack's configs finished", every=0.2, proc=driver)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.popen.wait(timeout=60)
    finally:
        driver.stop()
    done_before = {r.info.run_id: r.info.end_time for r in runs() if r.info.status == "FINISHED"}
    assert len(done_before) < 4 + 4, "the sweep ended before the driver was killed"

    resumed = Proc(args + ["--resume"], log=tmp_path / "resume.log", cwd=tmp_path)
    resumed.finish(timeout=500)
    log = resumed.output()
    assert "resuming session" in log, log[-3000:]
    every = runs()
    by_stage = {}
    for r in every:
        by_stage.setdefault(r.data.tags["raydiff.stage"], []).append(r)
    # one run per config, whatever was packed: 4 identify, 8 imbalance (4 FAILED: the
    # diverged lr), each carrying its pack and the pack's size
    assert len(by_stage["identify"]) == 4 and len(by_stage["imbalance"]) == 8, log[-3000:]
    failed = [r for r in every if r.info.status == "FAILED"]
    assert sorted(float(r.data.params["lr"]) for r in failed) == [1e37] * 4, log[-3000:]
    assert all("diverged" in r.data.tags["raydiff.error"] for r in failed)
    assert all(r.info.status == "FINISHED" for r in every if r not in failed)
    assert {r.data.tags["raydiff.pack_size"] for r in by_stage["identify"]} == {"2"}
    assert len({r.data.tags["raydiff.pack"] for r in by_stage["identify"]}) == 2
    # the two remaining ratios (two split sizes) are two packs of 4
    assert {r.data.tags["raydiff.pack_size"] for r in by_stage["imbalance"]} == {"4"}
    # a packed config's cost is its share of the pack, the pack's wall time beside it
    for run in by_stage["identify"]:
        m = run.data.metrics
        assert m["trial_seconds"] == pytest.approx(m["pack_seconds"] / 2)
    names = [r.info.run_name for r in every]
    assert len(set(names)) == len(names) and all(n.split()[0] in ("identify", "imbalance")
                                                 for n in names)
    # every imbalance config read its own identify config's run
    cells = [(r.data.params["seed"], r.data.params["identify.strategy"],
              r.data.params["remaining_train_ratio"]) for r in by_stage["imbalance"]]
    assert sorted(cells) == sorted((s, t, q) for s in ("0", "1") for t in ("energy", "stragglers")
                                   for q in ("1.0", "0.5"))
    # finished configs were not trained again
    after = {r.info.run_id: r.info.end_time for r in every}
    assert all(after[run_id] == end for run_id, end in done_before.items())
    print(f"{len(done_before)} configs finished before the kill; {len(every)} runs in all")


def test_a_pack_holds_one_copy_of_inputs_its_configs_share():
    """Configs of a pack differ in labels (noise seed), not in inputs: the pack keeps one
    copy of x, not one per config; a config with other inputs (another subset, an image
    kind of hardness) runs alone, since the pack trains on one x."""
    from types import SimpleNamespace

    from raydiff.data import load_dataset
    from raydiff.data.splits import config_tensors
    from raydiff.experiments import _packs

    data = load_dataset("mnist5k")
    configs = [build_config(train_classifier.Config,
                            {"subset_size": size, "noise_ratio": 0.2, "seed": seed})
               for size, seed in ((300, 0), (300, 1), (300, 2), (200, 0))]
    reports = [SimpleNamespace(device="cpu")] * len(configs)
    alone = []
    outcomes, ok, _, _, tensors = _packs.start(
        configs, reports, data, packable=lambda c: True,
        run=lambda c, r, d: alone.append(c.subset_size) or {}, prepare_one=config_tensors)
    assert ok == [0, 1, 2] and alone == [200] and outcomes[3] == {}
    assert tensors[1].x is tensors[0].x and tensors[2].x is tensors[0].x
    assert not torch.equal(tensors[0].y, tensors[1].y)          # their own noisy labels
