"""The hardness methods beyond noisy-label detection (Data-IQ, large loss, GraNd,
prototypicality, MC dropout, ALLSH, the learnt detector, LeNet, Adam) on planted truth, and
the registry made true: every registered score reaches some experiment's per_sample.parquet."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import softmax

from raydiff.data import Dataset
from raydiff.engine.detector import (detect, label_probability_sequences, train_detector)
from raydiff.engine.grad_norm import per_sample_grad_norms
from raydiff.engine.perturb import (augmentations, augmented_probs, has_dropout,
                                    logits_and_penultimate, mc_dropout_probs, penultimate)
from raydiff.engine.train import predict
from raydiff.experiments import (confident_learning, crossval, cscore, detector, dynamics,
                                 identify, train_classifier, vog)
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import ConfigError, build_config
from raydiff.models import get_model
from raydiff.scores import PRODUCERS, SCORES, auroc
from raydiff.scores.dynamics import (cartography_confidence, data_iq, dataiq_aleatoric,
                                     dataiq_hard, grand, large_loss)
from raydiff.scores.representation import allsh, mc_dropout, prototypicality

pytestmark = pytest.mark.usefixtures("one_thread")


# -- scores ---------------------------------------------------------------------------------

def _traj_from_p(p):
    """(E, N, 2) logits whose softmax gives label 0 the probabilities p (E, N)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-9, 1 - 1e-9)
    logits = np.zeros(p.shape + (2,))
    logits[..., 0] = np.log(p / (1 - p))
    return logits


def test_dataiq_hard_ranks_the_confidently_wrong_above_the_ambiguous():
    # 0: easy (p ~ 1); 1: ambiguous (p ~ 0.5 throughout); 2: hard (p ~ 0.05 throughout)
    p = np.array([[0.99, 0.5, 0.05]] * 6)
    logits, labels = _traj_from_p(p), np.zeros(3, dtype=int)
    stats = data_iq(logits, labels=labels)
    hard, alea = dataiq_hard(logits, labels=labels), dataiq_aleatoric(logits, labels=labels)
    np.testing.assert_allclose(stats["confidence"], [0.99, 0.5, 0.05], atol=1e-9)
    np.testing.assert_allclose(alea, [0.99 * 0.01, 0.25, 0.05 * 0.95], atol=1e-9)
    # the identity the docstring states: (1 - confidence) - aleatoric = mean (1 - p)^2
    np.testing.assert_allclose(hard, 1 - stats["confidence"] - stats["aleatoric"], atol=1e-12)
    assert hard[2] > hard[1] > hard[0]                 # Data-IQ's hard region first
    assert alea[1] > alea[2] > alea[0]                 # its ambiguous region first
    np.testing.assert_allclose(cartography_confidence(logits, labels=labels),
                               1 - stats["confidence"])


def test_large_loss_is_the_mean_cross_entropy_over_epochs():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(0, 2, (5, 7, 3)), rng.integers(0, 3, 7)
    expected = np.mean([-np.log(softmax(logits[e], 1)[np.arange(7), labels]) for e in range(5)], 0)
    np.testing.assert_allclose(large_loss(logits, labels=labels), expected, rtol=1e-12)


def test_grand_averages_runs_and_refuses_what_no_norm_can_be():
    norms = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert grand(norms).tolist() == [2.0, 3.0] and grand(norms[0]).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=">= 0"):
        grand(-norms)


def test_prototypicality_is_one_minus_the_cosine_to_the_class_mean():
    e = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 0.0]])
    labels = np.array([0, 0, 0, 1, 1])
    s = prototypicality(e, labels=labels)
    mu0 = e[:3].mean(0)
    assert s[0] == pytest.approx(1 - mu0[0] / np.linalg.norm(mu0))
    assert s[2] > s[0]                    # the odd one out of class 0 is the least typical
    assert s[3] == pytest.approx(0.0) and s[4] == 1.0     # a zero embedding has no direction


def test_mc_dropout_and_allsh_on_hand_made_probabilities():
    probs = np.array([[[0.9, 0.1], [0.5, 0.5]], [[0.7, 0.3], [0.1, 0.9]]])   # (T=2, N=2, C)
    np.testing.assert_allclose(mc_dropout(probs, labels=[0, 0]), [0.2, 0.7])
    with pytest.raises(ValueError, match="sum to 1"):
        mc_dropout(probs * 3, labels=[0, 0])
    same = np.repeat(probs[:1], 3, axis=0)
    np.testing.assert_allclose(allsh(same), 0.0, atol=1e-12)    # nothing moves: 0
    kl = 0.9 * np.log(0.9 / 0.7) + 0.1 * np.log(0.1 / 0.3)
    assert allsh(probs)[0] == pytest.approx(kl)
    with pytest.raises(ValueError, match="at least one augmentation"):
        allsh(probs[:1])


# -- engine ---------------------------------------------------------------------------------

def test_per_sample_grad_norms_equal_one_backward_pass_per_sample():
    torch.manual_seed(0)
    for name, shape in (("simple_nn", (1, 16, 16)), ("lenet", (1, 16, 16)),
                        ("small_cnn", (1, 16, 16))):
        model = get_model(name, input_shape=shape, num_classes=3, seed=1, hidden=[8])
        model(torch.randn(4, *shape))          # batch norm: running statistics move off 0/1
        x, y = torch.randn(5, *shape), torch.tensor([0, 1, 2, 0, 1])
        got = per_sample_grad_norms(model, x, y, chunk=2)
        model.eval()
        want = []
        for i in range(5):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
            want.append(torch.sqrt(sum(p.grad.square().sum() for p in model.parameters())))
        np.testing.assert_allclose(got, torch.stack(want).numpy(), rtol=1e-4, err_msg=name)


def test_the_linear_shortcut_refuses_a_layer_used_twice():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(torch.tanh(self.lin(x)))

    with pytest.raises(ValueError, match="applies a Linear layer twice"):
        per_sample_grad_norms(Twice(), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))


def test_lenet_shapes_dropout_and_penultimate_embedding():
    for size in (28, 32):
        model = get_model("lenet", input_shape=(1, size, size), num_classes=10, seed=0)
        x = torch.randn(6, 1, size, size)
        assert model(x).shape == (6, 10) and has_dropout(model)
        torch.testing.assert_close(penultimate(model, x), model.eval().features(x))
    with pytest.raises(ValueError, match="at least 16 x 16"):
        get_model("lenet", input_shape=(1, 8, 8), num_classes=10, seed=0)
    mlp = get_model("simple_nn", input_shape=(4,), num_classes=3, seed=0, hidden=[5, 6])
    assert penultimate(mlp, torch.randn(2, 4)).shape == (2, 6) and not has_dropout(mlp)


def test_mc_dropout_passes_differ_repeat_with_the_seed_and_need_dropout():
    model = get_model("lenet", input_shape=(1, 16, 16), num_classes=4, seed=0)
    x = torch.randn(8, 1, 16, 16)
    a = mc_dropout_probs(model, x, passes=5, seed=3)
    assert a.shape == (5, 8, 4) and not torch.allclose(a[0], a[1])
    torch.testing.assert_close(a, mc_dropout_probs(model, x, passes=5, seed=3))
    mlp = get_model("simple_nn", input_shape=(4,), num_classes=3, seed=0)
    with pytest.raises(ValueError, match="no dropout layer"):
        mc_dropout_probs(mlp, torch.randn(2, 4))


def test_shared_passes_give_the_numbers_of_separate_ones():
    """model_inputs' short cuts (logits and embeddings from one pass; LeNet's features
    once for every MC-dropout pass; ALLSH's clean view from the logits) change no
    number: a wrapper without ``classify`` runs the full passes."""
    model = get_model("lenet", input_shape=(1, 16, 16), num_classes=4, seed=0)
    full = torch.nn.Sequential(model)                     # the same network, no short cut
    x = torch.randn(10, 1, 16, 16)
    logits, emb = logits_and_penultimate(model, x, batch_size=4)
    assert torch.equal(logits, predict(model, x, batch_size=4))
    assert torch.equal(emb, penultimate(full, x, batch_size=4))
    assert torch.equal(mc_dropout_probs(model, x, passes=3, seed=5, batch_size=4),
                       mc_dropout_probs(full, x, passes=3, seed=5, batch_size=4))
    draw = lambda: torch.Generator().manual_seed(1)                       # noqa: E731
    assert torch.equal(augmented_probs(model, x, generator=draw(), batch_size=4,
                                       logits=logits)[0],
                       augmented_probs(model, x, generator=draw(), batch_size=4)[0])


def test_augmentations_keep_the_value_range_and_features_get_noise_only():
    x = torch.rand(4, 1, 9, 9) * 2 - 1
    copies = augmentations(x, generator=torch.Generator().manual_seed(0))
    assert list(copies) == ["flip", "brightness", "noise", "pixelate"]
    for name, v in copies.items():
        assert v.shape == x.shape and v.min() >= x.min() and v.max() <= x.max(), name
        assert not torch.equal(v, x), name
    assert list(augmentations(torch.randn(5, 3))) == ["noise"]


def test_the_detector_learns_on_one_run_and_finds_noise_in_another():
    def run(seed, n=400, epochs=8):
        rng = np.random.default_rng(seed)
        noisy = rng.random(n) < 0.2
        rise = np.linspace(0.5, 4.0, epochs)[:, None]
        margin = np.where(noisy[None], -rise, rise) + rng.normal(0, 1.0, (epochs, n))
        logits = np.stack([margin, np.zeros_like(margin)], axis=2)      # label 0
        return label_probability_sequences(logits, np.zeros(n, dtype=int)), noisy

    source, target = run(0), run(1)
    fitted = train_detector(*source, seed=0, epochs=15, hidden=16, layers=1)
    assert fitted.losses[-1] < fitted.losses[0]
    assert auroc(detect(fitted.model, target[0]), target[1]) > 0.95
    with pytest.raises(ValueError, match="both noisy and clean"):
        train_detector(source[0], np.zeros(400, bool), seed=0)


# -- config ---------------------------------------------------------------------------------

def test_optimizer_key_is_validated_and_adam_is_not_packed():
    with pytest.raises(ConfigError, match="optimizer='rmsprop' is not allowed; valid values: "
                                          r"\['sgd', 'adam'\]"):
        build_config(train_classifier.Config, {"optimizer": "rmsprop"})
    cfg = build_config(train_classifier.Config, {"optimizer": "adam", "lr": 1e-3})
    assert not train_classifier.packable(cfg) and train_classifier.packable(
        build_config(train_classifier.Config, {}))
    assert not dynamics.packable({"model": "simple_nn", "optimizer": "adam"})
    with pytest.raises(ConfigError, match="source_seed=2 is this trial's own seed"):
        build_config(detector.Config, {"seed": 2, "source_seed": 2})


# -- the registry made true -------------------------------------------------------------------

def blobs(n=120, classes=3, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (rng.normal(0, 3.0, (classes, dim))[y] + rng.normal(0, 1, (n, dim))).astype(np.float32)
    return Dataset("toy", x, y.astype(np.int64), classes, np.array(["train"] * n),
                   is_image=False)


def images(n=80, classes=3, size=16, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    base = rng.integers(0, 256, (classes, 1, size, size))
    x = np.clip(base[y] + rng.normal(0, 40, (n, 1, size, size)), 0, 255).astype(np.uint8)
    return Dataset("toyimg", x, y.astype(np.int64), classes, np.array(["train"] * n))


MINI = dict(dataset="blobs", subset_size=None, noise_ratio=0.2, seed=0, model="simple_nn",
            hidden=[16], epochs=3, batch_size=32, lr_milestones=[], checkpoint_every=3)


def _fields(cls, values):
    keys = {f.name for f in dataclasses.fields(cls)}
    return build_config(cls, {k: v for k, v in values.items() if k in keys})


def _table(folder):
    return pd.read_parquet(folder / "per_sample.parquet")


def test_every_registered_score_reaches_a_per_sample_table(tmp_path):
    """PRODUCERS names, for every input of the registry, the experiments whose table
    carries all its scores; each runs once on tiny data and its columns are checked. A
    score registered under an input no experiment produces fails here."""
    assert set(PRODUCERS) == set(SCORES), "every input needs a producing experiment"
    data, pics = blobs(), images()
    tables = {}
    identify.run(_fields(identify.Config, {**MINI, "epochs": 12, "inversion_start": 2,
                                           "check_every": 2, "judge_by_final_model": True}),
                 Report(tmp_path / "identify"), data)
    tables["identify"] = _table(tmp_path / "identify")
    # LeNet with Adam, H-CAT's recipe: the model with dropout gives MC dropout too
    train_classifier.run(_fields(train_classifier.Config, {
        **MINI, "model": "lenet", "optimizer": "adam", "lr": 1e-3, "epochs": 1,
        "mc_passes": 3, "method": "mc_dropout"}), Report(tmp_path / "tc"), pics)
    tables["train_classifier"] = _table(tmp_path / "tc")
    ups = []
    for seed in (0, 1):
        folder = tmp_path / f"dyn{seed}"
        cfg = _fields(dynamics.Config, {**MINI, "seed": seed, "el2n_epoch": 1, "el2n_runs": 2})
        dynamics.run(cfg, Report(folder), data)
        ups.append(Upstream(folder, params=dataclasses.asdict(cfg), run_id=f"dyn{seed}"))
    tables["dynamics"] = _table(tmp_path / "dyn0")
    folds = []
    for fold in range(2):
        folder = tmp_path / f"fold{fold}"
        crossval.run(_fields(crossval.Config, {**MINI, "folds": 2, "fold": fold}),
                     Report(folder), data)
        folds.append(Upstream(folder))
    confident_learning.run(_fields(confident_learning.Config, MINI),
                           Report(tmp_path / "cl", upstream={"crossval": folds}))
    tables["confident_learning"] = _table(tmp_path / "cl")
    vog.run(_fields(vog.Config, {**MINI, "epochs": 6, "vog_every": 1, "test_fraction": 0.2,
                                 "figures": False}), Report(tmp_path / "vog"), data)
    tables["vog"] = _table(tmp_path / "vog")
    cscore.run(_fields(cscore.Config, {**MINI, "ratios": [0.5], "models_per_ratio": 8,
                                       "models_per_pack": 8, "epochs": 2}),
               Report(tmp_path / "cscore"), data)
    tables["cscore"] = _table(tmp_path / "cscore")
    metrics = detector.run(_fields(detector.Config, {**MINI, "lstm_epochs": 2,
                                                      "lstm_hidden": 8}),
                           Report(tmp_path / "det", upstream={"dynamics": ups}))
    tables["detector"] = _table(tmp_path / "det")
    assert metrics["source_seed"] == 1

    for needs, producers in PRODUCERS.items():
        for experiment in producers:
            columns = set(tables[experiment].columns)
            for name in SCORES[needs]:
                assert f"score_{name}" in columns, (needs, experiment, name)
                assert tables[experiment][f"score_{name}"].notna().all(), (experiment, name)
    tc = tables["train_classifier"]
    assert np.array_equal(tc["score"], tc["score_mc_dropout"])
    assert np.array_equal(tables["detector"]["sample_id"], tables["dynamics"]["sample_id"])


def test_a_detector_stage_gathers_every_seed_and_noise_of_its_data():
    from raydiff.tune import sweep as sweeps
    raw = {"name": "d",
           "config": {"dataset": "mnist5k", "subset_size": 300, "seed": {"grid": [0, 1, 2]},
                      "hidden": [64], "epochs": 3, "lr": 0.1,     # the classifiers' recipe
                      "noise": {"cases": [
                          {"noise_kind": "uniform", "noise_ratio": {"grid": [0.1, 0.2]}},
                          {"noise_kind": "pair", "noise_ratio": 0.2}]}},
           "stages": {"dynamics": {"experiment": "dynamics", "config": {"epochs": 2}},
                      "detector": {"experiment": "detector", "after": "dynamics"},
                      "cl": {"experiment": "confident_learning", "after": "folds"},
                      "folds": {"experiment": "crossval", "config": {"folds": 2,
                                                                      "fold": {"grid": [0, 1]}}}}}
    planned = sweeps.plan(sweeps.validate(raw))
    assert len(planned["detector"]) == 9                     # one per seed and noise setting
    for spec in planned["detector"]:
        assert len(spec.upstream["dynamics"]) == 9        # every dynamics run of the data
    for spec in planned["cl"]:                                 # other gatherers: own setting only
        assert len(spec.upstream["crossval"]) == 2


def test_the_cifar10_sweep_plans_the_demos_settings_with_resnet18_on_quarter_gpus():
    from pathlib import Path

    from raydiff.tune import sweep as sweeps
    repo = Path(__file__).resolve().parents[1]
    demo = sweeps.plan(sweeps.load(repo / "sweeps" / "hardness_demo.yaml"))
    sweep = sweeps.load(repo / "sweeps" / "hardness_cifar10.yaml")
    cifar = sweeps.plan(sweep)

    def settings(specs):
        return sorted({(s.config["hardness"], s.config["noise_ratio"], s.config["seed"])
                       for s in specs})

    assert len(settings(cifar["dynamics"])) == 90
    for stage in cifar:              # every stage it keeps sees every (kind, p, seed)
        assert settings(cifar[stage]) == settings(demo[stage])
    assert {s.name for s in sweep.stages} == set(demo) - {"data_params", "vog"}
    for stage in ("dynamics", "final_model", "crossval"):
        config = sweeps.resolved(sweep.stage(stage), cifar[stage][0].config)
        assert (config["dataset"], config["model"]) == ("CIFAR10", "resnet18")
    final = sweeps.resolved(sweep.stage("final_model"), cifar["final_model"][0].config)
    assert (final["optimizer"], final["lr"], final["batch_size"], final["epochs"]) == (
        "adam", 0.001, 64, 10)                      # H-CAT's recipe
    assert all(s.resources == {"cpu": 2, "gpu": 0.25} for s in sweep.stages)


def test_hcat_recipe_lenet_with_adam_trains_in_dynamics_and_crossval(tmp_path):
    values = {**MINI, "model": "lenet", "optimizer": "adam", "lr": 1e-3, "batch_size": 16,
              "epochs": 2, "checkpoint_every": 2}
    pics = images(n=60)
    metrics = dynamics.run(_fields(dynamics.Config, {**values, "el2n_epoch": 1,
                                                     "el2n_runs": 2}),
                           Report(tmp_path / "dyn"), pics)
    table = _table(tmp_path / "dyn")
    assert metrics["epochs_run"] == 2 and (table["score_grand"] > 0).all()
    report = Report(tmp_path / "cv")
    crossval.run(_fields(crossval.Config, {**values, "folds": 2, "fold": 0}), report, pics)
    assert report.last["loss"] > 0


def test_mc_dropout_as_the_method_of_a_model_without_dropout_is_refused_before_training(
        tmp_path):
    cfg = _fields(train_classifier.Config, {**MINI, "method": "mc_dropout"})
    report = Report(tmp_path)
    with pytest.raises(ConfigError, match="method='mc_dropout' needs a model with dropout"):
        train_classifier.run(cfg, report, blobs())
    assert report.history == []                       # no epoch was trained
