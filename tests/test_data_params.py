"""Data parameters: sparse optimiser, clamping, the tempered loss, noisy-label detection,
enrichment labels, resume, the retrain stage and the report builder."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from raydiff.data import Dataset, prepare
from raydiff.engine import crop_flip, step_schedule, train
from raydiff.engine.data_params import LOG_SIGMA_MAX, LOG_SIGMA_MIN, DataParameters, SparseSGD
from raydiff.experiments import data_params as dpx
from raydiff.experiments import retrain
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import ConfigError, build_config
from raydiff.models import get_model
from raydiff.scores.data_params import enrichment_labels


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_dataset(n=600, classes=4, dim=8, spread=1.6, seed=0):
    """Gaussian clusters that overlap a little: clean labels are learnt before noisy ones."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (classes, dim))
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.normal(0, spread, (n, dim))).astype(np.float32)
    return Dataset("toy", x, y.astype(np.int64), classes, np.array(["train"] * n),
                   is_image=False)


def toy_config(**overrides):
    values = dict(dataset="blobs", noise_ratio=0.4, model="simple_nn", hidden=[32], epochs=6,
                  batch_size=32, lr=0.1, weight_decay=0.0, lr_milestones=[], figures={"enrich_classes": 0},
                  variant="instance", lr_instance=0.5, test_fraction=0.2)
    values.update(overrides)
    return build_config(dpx.Config, values)


# -- optimiser, clamping, loss ------------------------------------------------------------

def test_sparse_sgd_leaves_zero_gradient_entries_untouched_including_momentum():
    p = torch.zeros(4, requires_grad=True)
    opt = SparseSGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.tensor([1.0, 1.0, 0.0, 0.0])
    opt.step()
    p.grad = torch.tensor([0.0, 1.0, 2.0, 0.0])
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    # entry 0 was skipped in step 2: value and momentum as after step 1
    assert p[0].item() == pytest.approx(-0.1) and buf[0].item() == pytest.approx(1.0)
    # entry 1 moved twice with momentum: buf 0.9 * 1 + 1
    assert buf[1].item() == pytest.approx(1.9) and p[1].item() == pytest.approx(-0.1 - 0.19)
    # entry 2 touched first in step 2 starts from buf = grad
    assert buf[2].item() == pytest.approx(2.0) and p[2].item() == pytest.approx(-0.2)
    # entry 3 never had a gradient
    assert p[3].item() == 0.0 and buf[3].item() == 0.0


def test_sparse_sgd_equals_torch_sgd_on_dense_gradients():
    torch.manual_seed(0)
    a = torch.randn(5, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    ours, ref = SparseSGD([a], lr=0.05, momentum=0.9), torch.optim.SGD([b], lr=0.05, momentum=0.9)
    for _ in range(4):
        g = torch.randn(5).abs() + 0.1
        a.grad, b.grad = g.clone(), g.clone()
        ours.step(), ref.step()
    assert torch.allclose(a, b)


def test_clamping_holds_after_every_step():
    labels = torch.tensor([0, 1, 0, 1])
    dp = DataParameters(4, 2, labels, learn_class=True, learn_instance=True, lr_class=1e4,
                        lr_instance=1e4)
    logits = torch.tensor([[1.0, -1.0]] * 4)
    for _ in range(3):
        for opt in dp.optimizers:
            opt.zero_grad()
        dp.loss(logits, torch.arange(4)).backward()
        for opt in dp.optimizers:
            opt.step()
        dp.clamp_()
        for p in (dp.class_log, dp.instance_log):
            assert (p >= LOG_SIGMA_MIN - 1e-6).all() and (p <= LOG_SIGMA_MAX + 1e-6).all()
    # the huge steps drove correct samples to the floor and wrong ones to the ceiling
    assert dp.instance_log[0].item() == pytest.approx(LOG_SIGMA_MIN, abs=1e-6)
    assert dp.instance_log[1].item() == pytest.approx(LOG_SIGMA_MAX, abs=1e-6)
    assert dp.instance_sigma().min() >= 1 / 20 - 1e-6 and dp.instance_sigma().max() <= 20 + 1e-5


@pytest.mark.parametrize("learn_class,learn_instance,temperature", [
    (True, True, 2.0), (False, True, 1.0), (True, False, 1.0), (False, False, 1.0)])
def test_loss_at_init_is_tempered_cross_entropy(learn_class, learn_instance, temperature):
    torch.manual_seed(1)
    logits, labels = torch.randn(6, 3) * 3, torch.tensor([0, 1, 2, 0, 1, 2])
    idx = torch.tensor([1, 3, 5])
    dp = DataParameters(6, 3, labels, learn_class=learn_class, learn_instance=learn_instance,
                        wd_class=0.1, wd_instance=0.1)   # log 1 = 0: the decay adds nothing
    expected = F.cross_entropy(logits[idx] / temperature, labels[idx])
    assert dp.loss(logits[idx], idx).item() == pytest.approx(expected.item(), rel=1e-6)


def test_weight_decay_covers_the_minibatch_parameters_only():
    labels = torch.tensor([0, 1, 1])
    dp = DataParameters(3, 2, labels, learn_class=True, learn_instance=True, init_class=2.0,
                        init_instance=3.0, wd_class=0.2, wd_instance=0.4)
    idx = torch.tensor([0, 2])
    logits = torch.zeros(2, 2)
    ce = F.cross_entropy(logits / 5.0, labels[idx])
    decay = 0.5 * 0.4 * 2 * math.log(3.0) ** 2 + 0.5 * 0.2 * 2 * math.log(2.0) ** 2
    assert dp.loss(logits, idx).item() == pytest.approx(ce.item() + decay, rel=1e-6)
    for opt in dp.optimizers:
        opt.zero_grad()
    dp.loss(logits, idx).backward()
    assert dp.instance_log.grad[1] == 0 and (dp.instance_log.grad[idx] != 0).all()


# -- detection on planted noise ----------------------------------------------------------

def test_instance_parameters_find_planted_noisy_labels(tmp_path):
    data = toy_dataset()
    metrics = dpx.run(toy_config(epochs=8), Report(tmp_path), data)
    table = pd.read_parquet(tmp_path / "per_sample.parquet")
    noisy, score = table["is_noisy"].to_numpy(), table["score"].to_numpy()
    # the noise of every experiment: drawn over the whole subset, the test split held out after
    whole = prepare(data, noise_ratio=0.4, noise_seed=0, normalize="none")
    np.testing.assert_array_equal(noisy, whole.is_noisy[table["sample_id"].to_numpy()])
    np.testing.assert_array_equal(table["observed_label"],
                                  whole.observed_label[table["sample_id"].to_numpy()])
    assert noisy.mean() == pytest.approx(0.4, abs=0.05)
    top = np.argsort(-score)[:int(0.4 * len(score))]
    assert noisy[top].mean() > 0.75                      # chance is 0.4
    assert metrics["final_detect_precision_at_k"] == pytest.approx(noisy[top].mean())
    assert metrics["final_detect_auroc"] > 0.85
    traj = np.load(tmp_path / "instance_sigma.npy")
    assert traj.dtype == np.float16 and traj.shape == (len(table), 8)
    assert np.allclose(traj[:, -1], score, rtol=1e-3)
    assert table["hard"].sum() == int(0.4 * len(table))


# -- enrichment ---------------------------------------------------------------------------

def test_enrichment_labels_on_hand_made_trajectories():
    traj = np.array([
        [1.0, 1.5, 2.5, 3.0],     # ends above 2: hard
        [1.0, 1.8, 1.2, 0.9],     # peak 1.8, ends 0.9: need review
        [1.0, 1.6, 1.3, 1.1],     # peaked but ends above 1: none
        [1.0, 0.8, 0.6, 0.5],     # low: easy
        [1.0, 0.9, 0.8, 0.7],     # low: easy
        [1.0, 1.0, 1.0, 0.95],    # third lowest of the rest: not easy with n_easy=2
        [1.0, 1.2, 1.5, 2.0],     # class 1: 2.0 is not above 2 -> easy (only candidate)
        [1.0, 2.5, 1.0, 1.0],     # class 1: peak 2.5, final 1.0 -> review
    ])
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    got = enrichment_labels(traj, labels, n_easy=2)
    assert list(got) == ["hard", "review", "", "easy", "easy", "", "easy", "review"]
    stricter = enrichment_labels(traj, labels, n_easy=0, hard_above=1.9, review_peak_above=2.0)
    assert list(stricter) == ["hard", "", "", "", "", "", "hard", "review"]
    with pytest.raises(ValueError):
        enrichment_labels(traj[:, :0], labels)


def test_enrichment_figures_are_logged_for_images(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 3, n)
    x = np.zeros((n, 1, 12, 12), dtype=np.uint8)
    for c in range(3):
        x[y == c, 0, 2 + 3 * c:5 + 3 * c, 2:10] = 255
    x = (x + rng.integers(0, 60, x.shape)).clip(0, 255).astype(np.uint8)
    data = Dataset("tiny_images", x, y.astype(np.int64), 3, np.array(["train"] * n))
    cfg = toy_config(epochs=3, figures={"enrich_classes": 1, "tsne_thumbnails": 10}, hidden=[16],
                     augment=True)
    metrics = dpx.run(cfg, Report(tmp_path), data)
    for name in ("strip", "tsne", "trajectories"):
        assert (tmp_path / f"enrich_class000_{name}.png").stat().st_size > 1000
    assert not (tmp_path / "enrich_class001_strip.png").exists()
    table = pd.read_parquet(tmp_path / "per_sample.parquet")
    assert set(table["category"]) <= {"easy", "hard", "review", ""}
    assert metrics["n_easy"] == (table["category"] == "easy").sum() == 3 * 5


# -- resume, retrain, config --------------------------------------------------------------

class Crash(RuntimeError):
    pass


class CrashingReport(Report):
    """Dies right after the checkpoint of epoch ``at`` (a preempted trial)."""

    def __init__(self, folder, at):
        super().__init__(folder)
        self.at = at

    def _emit(self, metrics, step, checkpoint):
        if step == self.at and checkpoint is not None:
            raise Crash


def test_resume_continues_the_same_trajectory(tmp_path):
    data = toy_dataset(n=300)
    cfg = toy_config(epochs=5, variant="both", lr_milestones=[3], augment=False)
    dpx.run(cfg, Report(tmp_path / "whole"), data)
    with pytest.raises(Crash):
        dpx.run(cfg, CrashingReport(tmp_path / "cut", at=2), data)
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 2
    resumed = Report(tmp_path / "cut", resume_state=state)
    dpx.run(cfg, resumed, data)
    assert [s for s, _ in resumed.history[:-1]] == [3, 4, 5]
    for name in ("instance_sigma.npy", "class_sigma.npy", "train_loss.npy"):
        a, b = np.load(tmp_path / "whole" / name), np.load(tmp_path / "cut" / name)
        assert a.shape[1] == 5 and np.array_equal(a, b), name
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    final = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    for key, value in whole["model"].items():
        assert torch.equal(value, final["model"][key]), key


def test_retrain_drops_the_highest_sigma_and_reports_test_accuracy(tmp_path):
    data = toy_dataset()
    dpx.run(toy_config(epochs=8), Report(tmp_path / "dp"), data)
    cfg = build_config(retrain.Config, dict(
        dataset="blobs", noise_ratio=0.4, model="simple_nn", hidden=[32], epochs=4,
        batch_size=32, weight_decay=0.0, lr_milestones=[], subset_frac=0.6))
    report = Report(tmp_path / "rt", upstream={"data_params": Upstream(tmp_path / "dp")})
    metrics = retrain.run(cfg, report, data)
    assert metrics["n_train"] == int(480 * 0.6)
    assert metrics["kept_noise_fraction"] < 0.2          # 0.4 before cleaning
    assert 0 <= metrics["test_accuracy"] <= 100
    assert [s for s, _ in report.history[:-1]] == [1, 2, 3, 4]


def test_keep_mask_global_and_per_class():
    score = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    observed = np.array([0, 0, 0, 1, 1, 1])
    assert list(retrain.keep_mask(score, observed, subset_frac=0.5, level="global")) == [
        False, False, False, True, True, True]
    assert list(retrain.keep_mask(score, observed, subset_frac=0.5, level="class")) == [
        False, False, True, False, False, True]


def test_config_rules():
    with pytest.raises(ConfigError, match="val_fraction"):
        toy_config(score_epoch="best_val")
    with pytest.raises(ConfigError, match="variant"):
        toy_config(variant="nope")
    assert toy_config(epochs=120, early_stop=84).last_epoch == 84


def test_best_validation_epoch_scores(tmp_path):
    cfg = toy_config(epochs=4, val_fraction=0.2, score_epoch="best_val")
    report = Report(tmp_path)
    metrics = dpx.run(cfg, report, toy_dataset(n=300))
    val = [m["val_accuracy"] for _, m in report.history[:-1]]
    assert metrics["score_epoch"] == 1 + int(np.argmax(val))
    split = Upstream(tmp_path).json("split.json")
    assert len(split["val_sample_id"]) == int(240 * 0.2) and len(split["test_sample_id"]) == 60


# -- engine hooks and models --------------------------------------------------------------

def test_crop_flip_moves_whole_windows():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) + 1
    out = crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    same = crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    for b in range(2):       # without padding only the flip is left
        assert torch.equal(same[b], x[b]) or torch.equal(same[b], x[b].flip(-1))
    # every kept value sits in the same channel, and rows stay contiguous
    for b in range(2):
        for c in range(3):
            kept = out[b, c][out[b, c] > 0]
            assert ((kept - 1) // 36 == b * 3 + c).all()


@pytest.mark.parametrize("milestones", [[3, 5], [1], [4, 4, 7], []])
def test_step_schedule_follows_multisteplr(milestones):
    # the rate each epoch actually trains with under MultiStepLR, stepped after every epoch
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    torch_rates = []
    for _ in range(9):
        torch_rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    schedule = step_schedule(0.1, milestones=milestones)
    assert [schedule(e) for e in range(1, 10)] == pytest.approx(torch_rates)


def test_step_schedule_and_train_hook():
    schedule = step_schedule(0.1, milestones=[3, 5])
    assert [round(schedule(e), 6) for e in range(1, 8)] == [0.1, 0.1, 0.1, 0.01, 0.01, 0.001,
                                                          0.001]
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    seen = []
    train(model, torch.randn(8, 2), torch.randint(0, 2, (8,)), epochs=5, optimizers=[opt],
          lr_schedule=schedule, on_epoch=lambda e, loss: seen.append(opt.param_groups[0]["lr"]),
          start_epoch=2)
    assert seen == pytest.approx([0.1, 0.01, 0.01])     # epochs 3, 4, 5


def test_wrn28_10_forward_backward_on_cifar_shaped_batch():
    model = get_model("wrn28_10", input_shape=(3, 32, 32), num_classes=100, seed=0)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(36.5e6, rel=0.01)
    x = crop_flip(torch.randn(2, 3, 32, 32), torch.Generator().manual_seed(0))
    loss = F.cross_entropy(model(x), torch.tensor([3, 7]))
    loss.backward()
    assert torch.isfinite(loss) and model.head.weight.grad.abs().sum() > 0


def test_resnet18_takes_grey_imagefolder_sized_input():
    model = get_model("resnet18", input_shape=(1, 64, 64), num_classes=5, seed=0)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5)


def _stem(model, x):
    return model.maxpool(model.relu(model.bn1(model.conv1(x))))


@pytest.mark.parametrize("channels", [3, 1])
def test_resnet18_cifar_stem_keeps_32x32(channels):
    # CIFAR stem: 3x3 stride-1 conv, no max-pool, so the residual stages start at 32x32
    model = get_model("resnet18", input_shape=(channels, 32, 32), num_classes=10, seed=0)
    x = torch.randn(2, channels, 32, 32)
    assert _stem(model, x).shape == (2, 64, 32, 32)
    assert model.layer4(model.layer3(model.layer2(model.layer1(_stem(model, x))))).shape[-2:] \
        == (4, 4)
    assert model(x).shape == (2, 10)
    # 64x64 ImageFolder images keep ImageNet's 7x7 stride-2 conv + max-pool
    big = get_model("resnet18", input_shape=(3, 64, 64), num_classes=10, seed=0)
    assert _stem(big, torch.randn(2, 3, 64, 64)).shape == (2, 64, 16, 16)


# -- report -------------------------------------------------------------------------------

def _finished(root, run_id, experiment, config, report, metrics):
    pd.DataFrame([(s, k, v) for s, m in report.history if s is not None for k, v in m.items()],
                 columns=["step", "key", "value"]).to_csv(root / run_id / "history.csv",
                                                          index=False)
    return {"run_id": run_id, "stage": experiment, "experiment": experiment,
            "trial_seconds": 1.0, **vars(config), **{f"m.{k}": v for k, v in metrics.items()}}


def test_report_tables_compare_baseline_instance_and_retrain(tmp_path):
    from raydiff.report import FolderContext, build_report

    data, rows = toy_dataset(n=300), []
    for seed in (0, 1):
        for variant in ("baseline", "instance"):
            cfg = toy_config(epochs=3, variant=variant, seed=seed)
            run_id = f"{variant}{seed}"
            report = Report(tmp_path / run_id)
            rows.append(_finished(tmp_path, run_id, "data_params", cfg, report,
                                  dpx.run(cfg, report, data)))
        cfg = build_config(retrain.Config, dict(dataset="blobs", noise_ratio=0.4, seed=seed,
                                                model="simple_nn", epochs=2, lr_milestones=[]))
        report = Report(tmp_path / f"rt{seed}",
                        upstream={"data_params": Upstream(tmp_path / f"instance{seed}")})
        rows.append(_finished(tmp_path, f"rt{seed}", "retrain", cfg, report,
                              retrain.run(cfg, report, data)))
    runs = pd.DataFrame(rows)
    written = build_report(FolderContext(runs, tmp_path / "out", tmp_path))
    names = {p.name for p in written}
    assert {"data_params_detection.csv", "data_params_accuracy.csv",
            "data_params_per_epoch.png", "data_params_sigma_noisy_vs_clean.png"} <= names
    acc = pd.read_csv(tmp_path / "out" / "data_params_accuracy.csv").set_index("method")
    assert set(acc.index) == {"baseline", "instance", "retrain 0.6 global"}
    assert (acc["runs"] == 2).all()
    expected = runs[runs["run_id"].str.startswith("instance")]["m.test_accuracy"]
    assert acc.loc["instance", "test_accuracy_mean"] == pytest.approx(expected.mean())
    det = pd.read_csv(tmp_path / "out" / "data_params_detection.csv").set_index("method")
    assert det.loc["instance", "final_detect_auroc_mean"] > 0.5
