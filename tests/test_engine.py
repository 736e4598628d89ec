import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raydiff.data import load_dataset, prepare
from raydiff.engine import predict, train
from raydiff.engine.inversion import class_radii, first_inversion
from raydiff.experiments import get_experiment
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import build_config
from raydiff.models import get_model
from raydiff.scores import auroc


def test_minibatch_dynamics_are_the_training_forward_logits():
    torch.manual_seed(0)
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    model = get_model("simple_nn", input_shape=(4,), num_classes=3, seed=0)
    before = predict(model, x)
    result = train(model, x, y, epochs=2, lr=0.0, batch_size=16, record_every=1,
                   generator=torch.Generator().manual_seed(0))
    # with lr 0 the model never changes, so every recorded logit equals a plain forward
    assert result.dynamics.logits.shape == (2, 50, 3)
    assert np.allclose(result.dynamics.logits[0], before.numpy(), atol=1e-6)
    assert list(result.dynamics.epochs) == [1, 2]


def test_same_seed_same_model_and_training():
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    runs = []
    for _ in range(2):
        model = get_model("simple_nn", input_shape=(4,), num_classes=2, seed=5)
        train(model, x, y, epochs=5, batch_size=8, generator=torch.Generator().manual_seed(1))
        runs.append(predict(model, x))
    assert torch.equal(runs[0], runs[1])


def test_class_radii_match_numpy():
    z, y = torch.randn(60, 5), torch.arange(60) % 3
    radii, _ = class_radii(z, y, 3)
    zn = (z / z.norm(dim=1, keepdim=True)).numpy()
    for c in range(3):
        members = zn[y.numpy() == c]
        expected = np.sqrt(((members - members.mean(0)) ** 2).sum(1).mean())
        assert abs(radii[c].item() - expected) < 1e-5


def test_first_inversion_finds_planted_minimum():
    epochs = list(range(20, 200))
    radii = [abs(e - 97) + 1.0 for e in epochs]          # minimum at epoch 97
    assert first_inversion(epochs, radii, start=20, check_every=5) == 100
    assert first_inversion(epochs, [1.0 / e for e in epochs]) is None


def _identify(tmp_path, **values):
    module = get_experiment("identify")
    config = build_config(module.Config, {"subset_size": 600, "epochs": 400, **values})
    report = Report(tmp_path / "identify")
    metrics = module.run(config, report, load_dataset("mnist5k"))
    return metrics, report


def test_stragglers_catch_planted_noisy_labels(tmp_path):
    metrics, report = _identify(tmp_path, strategy="stragglers", noise_ratio=0.2,
                                inversion_start=10, check_every=5)
    table = Upstream(report.folder).table("per_sample.parquet")
    assert metrics["classes_never_inverted"] == 0
    assert (table["hard"] == (table["score"] > 0)).all()
    # flipped labels contradict the images: many are still misclassified at inversion
    # (about half on 600 samples, where the radius minimum comes after part of the noise
    # is memorised), an order of magnitude more often than clean labels
    noisy_rate = table.loc[table["is_noisy"], "hard"].mean()
    assert noisy_rate > 0.45
    assert table.loc[~table["is_noisy"], "hard"].mean() < noisy_rate / 10


def test_confidence_and_energy_rank_planted_noisy_labels_high(tmp_path):
    _, report = _identify(tmp_path, strategy="confidence", noise_ratio=0.2, level="class",
                          max_retries=0)
    table = Upstream(report.folder).table("per_sample.parquet")
    noisy = table["is_noisy"].to_numpy()
    assert auroc(table["score_confidence"].to_numpy(), noisy) > 0.6
    assert auroc(table["score_energy"].to_numpy(), noisy) > 0.6


def test_hard_set_size_counts_the_noise_once(tmp_path):
    """k_c of confidence / energy under noise = the clean-label straggler count of class c
    (the same seed's stragglers at noise 0) + int(noise * N / C), added once; the three
    strategies then call a comparable number of samples hard."""
    # stragglers judged by the final model of a 150-epoch run, so every class of the tiny
    # clean run has a count (the radii of 600 clean digits are still falling after 1500
    # epochs: no class would invert); the arithmetic under test is the same
    train = {"judge_by_final_model": True, "epochs": 150, "max_retries": 0}
    share = int(0.2 * 600 / 10)
    clean, _ = _identify(tmp_path / "clean", strategy="stragglers", noise_ratio=0.0, **train)
    clean_k = np.array(Upstream(tmp_path / "clean" / "identify").json("inversion.json")
                       ["hard_per_class"])
    assert clean["n_hard"] == clean_k.sum() > 0 and clean["n_undecided"] == 0
    sizes = {}
    for strategy, level in (("stragglers", "dataset"), ("confidence", "class"),
                            ("energy", "dataset")):
        metrics, report = _identify(tmp_path / strategy, strategy=strategy, noise_ratio=0.2,
                                    level=level, **train)
        assert metrics["n_undecided"] == 0
        info = Upstream(report.folder).json("inversion.json")
        table = Upstream(report.folder).table("per_sample.parquet")
        sizes[strategy] = metrics["n_hard"]
        if strategy == "stragglers":
            noisy_k = np.array(info["hard_per_class"])
            continue
        # the clean count is the clean run's, exactly, and the share is added once
        np.testing.assert_array_equal(info["k_clean"], clean_k)
        assert metrics["k_clean_total"] == clean_k.sum()
        assert info["noise_share"] == share
        np.testing.assert_array_equal(info["hard_per_class"], clean_k + share)
        assert metrics["n_hard"] == clean_k.sum() + 10 * share
        if level == "class":
            counts = table[table["hard"]].groupby("observed_label").size()
            np.testing.assert_array_equal(counts.reindex(range(10), fill_value=0), clean_k + share)
    # the noisy run's stragglers already hold most flipped labels: adding the share to
    # them (the old rule) calls over twice as many samples hard as the stragglers
    assert noisy_k.sum() + 10 * share > 2 * sizes["stragglers"]
    # counted once, confidence / energy land near the stragglers (above them by the flipped
    # labels the noisy run had already fitted by its judging epoch)
    for strategy in ("confidence", "energy"):
        assert sizes["stragglers"] <= sizes[strategy] < 1.5 * sizes["stragglers"], sizes


def test_classes_that_never_invert_are_left_undecided(tmp_path):
    # lr 0: the radii never move, no class inverts, and no straggler count exists
    for strategy, level in (("stragglers", "dataset"), ("confidence", "class"),
                            ("energy", "dataset")):
        metrics, report = _identify(tmp_path / strategy, strategy=strategy, lr=0.0, epochs=30,
                                    max_retries=0, inversion_start=5, subset_size=300,
                                    level=level)
        table = Upstream(report.folder).table("per_sample.parquet")
        assert metrics["classes_never_inverted"] == 10
        assert table["hard"].isna().all()
        assert metrics["n_undecided"] == 300 and metrics["n_hard"] == 0
        assert report.tags["raydiff.never_inverted"] == ",".join(map(str, range(10)))
        assert not table["straggler"].any()          # not judged by the final model


def test_imbalance_refuses_an_undecided_identify_result(tmp_path):
    from raydiff.experiments import imbalance

    _, ident = _identify(tmp_path, strategy="stragglers", lr=0.0, epochs=30, max_retries=0,
                         inversion_start=5, subset_size=300)
    config = build_config(imbalance.Config, {"subset_size": 300, "epochs": 2})
    report = Report(tmp_path / "imbalance", upstream={"identify": Upstream(ident.folder)})
    with pytest.raises(ValueError, match="undecided.*never_inverted"):
        imbalance.run(config, report, load_dataset("mnist5k"))


def test_imbalance_split_keeps_ratios(tmp_path):
    from raydiff.experiments.imbalance import split_hard_easy

    hard = np.zeros(100, dtype=bool)
    hard[:30] = True
    train_idx, test_hard, test_easy = split_hard_easy(
        hard, train_ratio=0.5, remaining_ratio=0.0, reduce_hard=False, rng=np.random.default_rng(0))
    assert hard[train_idx].all() and len(train_idx) == 15      # r = 0: hard samples only
    assert hard[test_hard].all() and (~hard[test_easy]).all()
    assert len(test_hard) == 15 and len(test_easy) == 35
    train_idx, _, _ = split_hard_easy(hard, train_ratio=0.5, remaining_ratio=0.5,
                                      reduce_hard=True, rng=np.random.default_rng(0))
    assert hard[train_idx].sum() == 7 and (~hard[train_idx]).sum() == 35


def test_plain_sgd_without_optimiser_matches_torch_sgd():
    x, y = torch.randn(60, 4), torch.randint(0, 3, (60,))
    finals = []
    for explicit in (False, True):
        model = get_model("simple_nn", input_shape=(4,), num_classes=3, seed=2)
        unused = torch.nn.Parameter(torch.ones(2))          # the loss never reaches it
        model.register_parameter("unused", unused)
        optimizers = ([torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=0.01)]
                      if explicit else None)
        result = train(model, x, y, epochs=3, lr=0.05, weight_decay=0.01, batch_size=16,
                       optimizers=optimizers, generator=torch.Generator().manual_seed(0),
                       lr_schedule=lambda e: 0.05 / e)
        assert torch.equal(unused.detach(), torch.ones(2))
        finals.append((predict(model, x), result.losses))
    assert torch.allclose(finals[0][0], finals[1][0], atol=1e-6)
    assert np.allclose(finals[0][1], finals[1][1], atol=1e-6)
    assert finals[0][1][-1] < finals[0][1][0]


def test_fused_simple_nn_step_matches_autograd():
    from raydiff.engine.fused import supports_fused

    x, y = torch.randn(70, 1, 3, 3), torch.randint(0, 4, (70,))
    for batch_size in (32, None):
        runs = []
        for fused in (True, False):
            model = get_model("simple_nn", input_shape=(1, 3, 3), num_classes=4,
                              hidden=[6, 5, 7], seed=3)
            assert supports_fused(model)
            # an explicit loss function (the same cross-entropy) takes the autograd path
            loss_fn = None if fused else (lambda logits, idx: F.cross_entropy(logits, y[idx]))
            result = train(model, x, y, epochs=4, lr=0.2, weight_decay=0.01,
                           batch_size=batch_size, loss_fn=loss_fn, record_every=2,
                           generator=torch.Generator().manual_seed(0))
            runs.append((predict(model, x), result))
        (fused_logits, fused), (auto_logits, auto) = runs
        assert torch.allclose(fused_logits, auto_logits, atol=1e-5)
        assert np.allclose(fused.losses, auto.losses, atol=1e-6)
        assert np.allclose(fused.dynamics.logits, auto.dynamics.logits, atol=1e-5)
        assert fused.losses[-1] < fused.losses[0]
    # a hook anywhere (or a subclass) falls back to autograd
    model = get_model("simple_nn", input_shape=(1, 3, 3), num_classes=4, seed=0)
    model.out.register_forward_hook(lambda *a: None)
    assert not supports_fused(model)


def test_state_restores_every_named_part_and_refuses_another_setup():
    from raydiff.engine.state import restore_state, save_state

    def parts(seed):
        torch.manual_seed(seed)
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        return model, opt, torch.Generator().manual_seed(seed)

    model, opt, gen = parts(0)
    state = save_state(7, modules={"model": model}, optimizers={"model": opt},
                       generators={"batch": gen}, best={"epoch": 3})
    assert torch.equal(state["model"]["weight"], model.weight)      # the network at the top
    expected_draw = torch.randn(4, generator=gen)
    other, other_opt, other_gen = parts(1)
    epoch, extra = restore_state(state, modules={"model": other}, optimizers={"model": other_opt},
                                 generators={"batch": other_gen})
    assert epoch == 7 and extra == {"best": {"epoch": 3}}
    assert torch.equal(other.weight, model.weight)
    assert torch.equal(other_opt.state_dict()["state"][0]["momentum_buffer"],
                       opt.state_dict()["state"][0]["momentum_buffer"])
    assert torch.equal(torch.randn(4, generator=other_gen), expected_draw)
    with pytest.raises(ValueError, match="do not match"):
        restore_state(state, modules={"net": other}, optimizers={"model": other_opt},
                      generators={"batch": other_gen})


def test_the_one_sgd_update_is_torch_sgd_per_model_and_leaves_masked_models_alone():
    """sgd_update_ on three stacked models with their own rate, decay and momentum equals
    torch.optim.SGD run on each model alone (same order of arithmetic; torch fuses
    multiply-adds, so up to float rounding); a model masked out keeps its parameters and
    momentum bit for bit even when its gradient is NaN, and the others step exactly as
    they do without it."""
    from raydiff.engine.sgd import Hyper, sgd_update_

    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, generator=gen)]
    grads = [[torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, generator=gen)]
             for _ in range(4)]
    lrs, wds, moms = [0.1, 0.05, 0.2], [0.0, 0.01, 0.1], [0.9, 0.0, 0.5]
    hyper = Hyper.of(lrs, wds, moms, device="cpu", k=3)
    ours = [p.clone() for p in params]
    buffers = [torch.zeros_like(p) for p in params]
    for g in grads:
        sgd_update_(ours, g, hyper, buffers=buffers)
    for k in range(3):
        alone = [torch.nn.Parameter(p[k].clone()) for p in params]
        opt = torch.optim.SGD(alone, lr=lrs[k], weight_decay=wds[k], momentum=moms[k])
        for g in grads:
            for a, gi in zip(alone, g):
                a.grad = gi[k].clone()
            opt.step()
        for a, p in zip(alone, ours):
            torch.testing.assert_close(p[k], a.detach(), atol=1e-6, rtol=1e-6)
        assert not torch.equal(ours[0][k], params[0][k])            # they did move

    # model 1 masked, with a NaN gradient: untouched; models 0 and 2 as without the mask
    start, start_bufs = [p.clone() for p in ours], [b.clone() for b in buffers]
    masked, masked_bufs = [p.clone() for p in ours], [b.clone() for b in buffers]
    nan_grads = [g.clone() for g in grads[0]]
    nan_grads[0][1] = float("nan")
    sgd_update_(masked, nan_grads, hyper, buffers=masked_bufs,
                live=torch.tensor([True, False, True]))
    sgd_update_(ours, nan_grads, hyper, buffers=buffers)
    for i in range(2):
        assert torch.equal(masked[i][1], start[i][1])
        assert torch.equal(masked_bufs[i][1], start_bufs[i][1])
        assert torch.equal(masked[i][[0, 2]], ours[i][[0, 2]])
        assert torch.equal(masked_bufs[i][[0, 2]], buffers[i][[0, 2]])
    assert torch.isnan(ours[0][1]).all()                  # unmasked, the NaN got in
    with pytest.raises(ValueError, match="buffers"):
        sgd_update_(ours, grads[0], hyper)
