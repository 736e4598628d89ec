"""The ten kinds of hardness, by planted truth on small arrays (mnist5k subsets).

What each kind does is checked against what it must do: the exact count int(p * N), the
same samples for the same seed in every experiment, every chosen label really changed and
to the class the kind says, the instance kind picking what a clean model finds uncertain,
and the image kinds keeping every per-image pixel statistic (a score reading only those
does no better than chance, while the same score finds the raw perturbations).
"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from raydiff.data import (HARDNESS_CLASS_STREAM, HARDNESS_KINDS, IMAGE_KINDS, LABEL_KINDS,
                          Dataset, TensorData, class_map_for, clean_model_probs,
                          clean_positions, inject_hardness, load_dataset, pair_permutation,
                          prepare, rng_for, subset_indices, transition_matrix)
from raydiff.data.images import background_value, match_histograms, raw_perturbation
from raydiff.data.splits import config_tensors, noisy_splits
from raydiff.experiments import _packs
from raydiff.experiments.base import Report, per_sample_table
from raydiff.experiments.config import Common, ConfigError, build_config
from raydiff.scores import auroc

N = 1500


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k")


@pytest.fixture(scope="module")
def subset(mnist):
    """A random 1500 of mnist5k (its file is sorted by class): images and labels."""
    idx = subset_indices(len(mnist), subset_size=N, subset_seed=0)
    return mnist.x[idx], mnist.y[idx]


def _hard(subset, kind, ratio=0.2, seed=3, dataset="mnist5k"):
    x, y = subset
    return inject_hardness(x, y, kind=kind, ratio=ratio, num_classes=10, seed=seed,
                           dataset=dataset)


# -- every kind ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", HARDNESS_KINDS)
def test_every_kind_changes_exactly_int_pN_samples_and_only_them(subset, kind):
    x, y = subset
    h = _hard(subset, kind, ratio=0.23)
    assert h.kind == kind and h.is_hard.sum() == int(N * 0.23)
    if kind in LABEL_KINDS:
        assert (h.observed[h.is_hard] != y[h.is_hard]).all()      # every chosen label changes
        assert (h.observed[~h.is_hard] == y[~h.is_hard]).all()
        assert (h.is_noisy == h.is_hard).all() and h.x is x
        assert h.observed.min() >= 0 and h.observed.max() < 10
    else:
        assert (h.observed == y).all() and not h.is_noisy.any()  # labels kept
        assert (h.x[~h.is_hard] == x[~h.is_hard]).all()
        changed = (h.x != x).reshape(N, -1).any(axis=1)
        assert changed[h.is_hard].mean() > 0.95                  # the chosen images changed
    # the same seed: the same samples and labels again; another seed: others
    again, other = _hard(subset, kind, ratio=0.23), _hard(subset, kind, ratio=0.23, seed=4)
    assert (again.is_hard == h.is_hard).all() and (again.observed == h.observed).all()
    assert (again.x == h.x).all()
    assert not (other.is_hard == h.is_hard).all()
    assert _hard(subset, kind, ratio=0.0).is_hard.sum() == 0


def test_label_kinds_of_uniform_choice_pick_the_same_samples_as_uniform(subset):
    """uniform, pair, asymmetric, adjacent and the image kinds draw the samples the same
    way: one seed, one set, so the kinds compare on the same samples."""
    base = _hard(subset, "uniform").is_hard
    for kind in ("pair", "asymmetric", "adjacent", *IMAGE_KINDS):
        assert (_hard(subset, kind).is_hard == base).all(), kind


def test_adjacent_is_one_step_either_way_half_each(subset):
    _, y = subset
    h = _hard(subset, "adjacent", ratio=0.3)
    step = (h.observed[h.is_hard] - y[h.is_hard]) % 10
    assert set(step.tolist()) == {1, 9}
    assert (step == 1).sum() == int(N * 0.3) - int(N * 0.3) // 2 and (step == 9).sum() == int(N * 0.3) // 2


def test_pair_permutation_is_independent_of_the_ratio(subset):
    _, y = subset
    perm = pair_permutation(10, rng_for(3, HARDNESS_CLASS_STREAM))
    for ratio in (0.1, 0.2, 0.4):
        h = _hard(subset, "pair", ratio=ratio)
        assert (h.observed[h.is_hard] == perm[y[h.is_hard]]).all(), ratio
    assert not (pair_permutation(10, rng_for(4, HARDNESS_CLASS_STREAM)) == perm).all()


def test_asymmetric_rows_have_zero_diagonal_and_are_drawn_once_per_seed():
    T = transition_matrix(10, np.random.default_rng(0))
    assert np.allclose(T.sum(1), 1) and (np.diag(T) == 0).all()
    assert (T[~np.eye(10, dtype=bool)] > 0).all()
    # Dirichlet(1, ..., 1): every off-diagonal weight has mean 1 / (C - 1)
    many = np.stack([transition_matrix(5, np.random.default_rng(s)) for s in range(400)])
    off = many[:, ~np.eye(5, dtype=bool)]
    assert abs(off.mean() - 0.25) < 0.01 and 0.15 < off.std() < 0.22   # sd 0.19 for C=5
    # planted truth: on many samples the flips follow the seed's rows, whatever the ratio
    labels = np.repeat(np.arange(4), 20000)
    x = np.zeros((len(labels), 1, 2, 2), dtype=np.uint8)
    T = transition_matrix(4, rng_for(7, HARDNESS_CLASS_STREAM))
    for ratio in (0.3, 0.6):
        h = inject_hardness(x, labels, kind="asymmetric", ratio=ratio, num_classes=4, seed=7)
        for c in range(4):
            got = np.bincount(h.observed[h.is_hard & (labels == c)], minlength=4)
            assert got[c] == 0
            np.testing.assert_allclose(got / got.sum(), T[c], atol=0.02)


def test_class_map_follows_the_map_and_refuses_what_it_cannot_do(subset):
    _, y = subset
    cmap = class_map_for("mnist5k")
    h = _hard(subset, "class_map", ratio=0.3)
    assert not np.isin(y[h.is_hard], [0, 4]).any()                # no partner: never chosen
    for a, b in zip(y[h.is_hard], h.observed[h.is_hard]):
        assert b in cmap[a]
    sevens = h.observed[h.is_hard & (y == 7)]
    assert set(sevens.tolist()) == {1, 2}                          # 7 -> 1 or 2
    assert class_map_for("CIFAR10") == {9: (1,), 2: (0,), 4: (7,), 3: (5,), 5: (3,)}
    with pytest.raises(ValueError, match="class_map.*FashionMNIST.*mnist5k"):
        _hard(subset, "class_map", dataset="FashionMNIST")
    eligible = np.isin(y, list(cmap)).mean()
    with pytest.raises(ValueError, match="lower noise_ratio to at most"):
        _hard(subset, "class_map", ratio=min(1.0, eligible + 0.05))


def test_instance_noise_prefers_what_a_clean_model_finds_uncertain(subset):
    x, y = subset
    probs = clean_model_probs(x, y, 10)
    assert probs.shape == (N, 10) and np.allclose(probs.sum(1), 1)
    assert (probs.argmax(1) == y).mean() > 0.85                   # a real clean model
    uncertainty = 1 - probs[np.arange(N), y]
    h = _hard(subset, "instance", ratio=0.2)
    assert auroc(uncertainty, h.is_hard) > 0.8
    rho = pd.Series(uncertainty).corr(pd.Series(h.is_hard.astype(float)), method="spearman")
    assert rho > 0.3
    # uniform noise does not: the contrast the kind exists for
    assert abs(auroc(uncertainty, _hard(subset, "uniform").is_hard) - 0.5) < 0.07
    # each chosen sample gets the clean model's most likely other class
    other = probs.copy()
    other[np.arange(N), y] = -1
    assert (h.observed[h.is_hard] == other.argmax(1)[h.is_hard]).all()


# -- image kinds: range, dtype, pixel statistics -------------------------------------------

def pixel_statistics(images, background):
    """Per-image statistics that read pixel values only: (N, 7)."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    return np.stack([flat.mean(1), flat.std(1), flat.min(1), flat.max(1),
                     np.median(flat, 1), (flat == float(background)).mean(1),
                     (flat >= flat.max(1, keepdims=True)).mean(1)], axis=1)


def worst_auroc_gap(images, is_hard, background=0):
    """max over the statistics of |AUROC(statistic, is_hard) - 0.5|."""
    stats = pixel_statistics(images, background)
    return max(abs(auroc(s, is_hard) - 0.5) for s in stats.T)


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_kinds_keep_dtype_range_and_every_pixel_statistic(mnist, kind):
    """On 3000 mnist5k images: a score made of pixel statistics (mean, std, min, max,
    median, fraction at background, fraction at the maximum) is at chance on the hard
    images (within 0.5 +- 0.1), while it finds the raw perturbation before matching."""
    idx = subset_indices(len(mnist), subset_size=3000, subset_seed=1)
    x, y = mnist.x[idx], mnist.y[idx]
    h = inject_hardness(x, y, kind=kind, ratio=0.2, num_classes=10, seed=0)
    assert h.x.dtype == x.dtype and h.x.shape == x.shape
    assert h.x.min() >= x.min() and h.x.max() <= x.max()
    # each hard image holds exactly the values of the clean one it replaces
    np.testing.assert_array_equal(np.sort(h.x[h.is_hard].reshape(600, -1), 1),
                                  np.sort(x[h.is_hard].reshape(600, -1), 1))
    assert worst_auroc_gap(h.x, h.is_hard) < 0.1
    # negative control: the raw perturbation, in the same dtype and range, is found
    raw = x.copy()
    raw[h.is_hard] = raw_perturbation(kind, x[h.is_hard], np.random.default_rng(0), lo=0,
                                      hi=255, background=background_value(x)).round()
    assert worst_auroc_gap(raw, h.is_hard) > 0.2      # shift: 0.23 (fraction at background)


def test_match_histograms_keeps_rank_order_and_breaks_ties_next_to_structure():
    rng = np.random.default_rng(0)
    perturbed = rng.normal(size=(5, 2, 6, 6))
    reference = rng.integers(0, 256, size=(5, 2, 6, 6)).astype(np.uint8)
    out = match_histograms(perturbed, reference)
    assert out.dtype == np.uint8
    for i in range(5):
        for c in range(2):
            a, b = perturbed[i, c].ravel(), out[i, c].ravel()
            assert (np.sort(b) == np.sort(reference[i, c].ravel())).all()
            assert (np.diff(b[np.argsort(a)].astype(int)) >= 0).all()   # monotone
    # a flat field with one bright pixel: the second brightest value goes next to it
    flat = np.zeros((1, 1, 7, 7))
    flat[0, 0, 3, 3] = 1.0
    ref = np.zeros((1, 1, 7, 7), dtype=np.uint8)
    ref[0, 0, 0, :2] = [200, 100]
    got = match_histograms(flat, ref)[0, 0]
    assert got[3, 3] == 200 and got[2:5, 2:5].max() == 200 and (got[2:5, 2:5] == 100).sum() == 1


def test_far_ood_and_shift_on_colour_images_keep_channels_and_dtype():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(40, 3, 12, 12)).astype(np.uint8)
    y = rng.integers(0, 4, size=40)
    for kind in ("far_ood", "shift", "zoom", "near_ood"):
        h = inject_hardness(x, y, kind=kind, ratio=0.5, num_classes=4, seed=0)
        assert h.x.dtype == np.uint8 and h.x.shape == x.shape and h.is_hard.sum() == 20
        np.testing.assert_array_equal(np.sort(h.x[h.is_hard].reshape(20, 3, -1), -1),
                                      np.sort(x[h.is_hard].reshape(20, 3, -1), -1))


def test_shift_moves_a_third_of_the_width_and_fills_background():
    img = np.zeros((2, 1, 28, 28))
    img[:, 0, 10:14, 12:15] = 255                      # a bar in columns 12..14
    out = raw_perturbation("shift", img, np.random.default_rng(0), lo=0, hi=255,
                           background=np.array([7.0]))
    starts = sorted(int(np.flatnonzero(o[0].max(0) == 255)[0]) for o in out)
    assert starts == [2, 22]                           # 10 px (ceil(28 / 3)) left and right
    right, left = (out[0], out[1]) if out[0][0].max(0)[22] == 255 else (out[1], out[0])
    assert (right[0, :, :10] == 7).all() and (left[0, :, -10:] == 7).all()


# -- the experiments' data -----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["pair", "instance", "zoom"])
def test_every_experiment_prepares_the_same_hard_set_and_a_held_out_split_is_clean(mnist, kind):
    from raydiff.experiments import data_params, train_classifier
    values = {"dataset": "mnist5k", "subset_size": 600, "noise_ratio": 0.25, "hardness": kind,
              "seed": 2}
    plain = config_tensors(build_config(train_classifier.Config, values), "cpu", mnist)
    dp = build_config(data_params.Config, values)
    split, train_pos, _, test_pos = noisy_splits(dp, mnist, "cpu")
    assert plain.hardness == kind and plain.is_hard.sum() == 150
    for t in (plain, split):
        assert (t.sample_id == plain.sample_id).all()
    keep = np.setdiff1d(np.arange(600), test_pos)
    assert (split.is_hard[keep] == plain.is_hard[keep]).all()
    assert (split.observed_label[keep] == plain.observed_label[keep]).all()
    assert torch.equal(split.x[keep], plain.x[keep])
    # the test split: true labels, clean images, nothing hard
    clean = prepare(mnist, subset_size=600, noise_seed=2)
    assert not split.is_hard[test_pos].any() and not split.is_noisy[test_pos].any()
    assert (split.observed_label[test_pos] == split.label[test_pos]).all()
    assert torch.equal(split.x[test_pos], clean.x[test_pos])
    assert plain.is_hard[test_pos].any()


def test_image_kinds_keep_the_normalisation_and_take_carries_the_clean_rows(mnist):
    clean = prepare(mnist, subset_size=500, noise_seed=1)
    hard = prepare(mnist, subset_size=500, noise_ratio=0.3, hardness="far_ood", noise_seed=1)
    assert abs(hard.x.mean().item() - clean.x.mean().item()) < 1e-5
    assert abs(hard.x.std().item() - clean.x.std().item()) < 1e-5
    part = hard.take(np.arange(0, 500, 2))
    assert (part.is_hard == hard.is_hard[::2]).all() and part.hardness == "far_ood"
    clean_positions(part, np.arange(len(part)))
    assert torch.equal(part.x, clean.x[::2]) and not part.is_hard.any()


def test_a_pack_trains_only_configs_with_the_same_inputs():
    """Packs share one x: a config whose hard images differ runs alone."""
    def tensors(value):
        return TensorData(torch.full((4, 2), float(value)), torch.zeros(4, dtype=torch.long),
                          np.zeros(4, int), np.zeros(4, bool), np.arange(4), 2)
    configs = [{"x": 0}, {"x": 0}, {"x": 1}]
    ran_alone = []
    outcomes, ok, cfgs, _, ts = _packs.start(
        configs, [SimpleNamespace(device="cpu") for _ in configs], None, packable=lambda c: True,
        run=lambda c, r, d: ran_alone.append(c["x"]) or {"alone": True},
        prepare_one=lambda c, device, data: tensors(c["x"]))
    assert ok == [0, 1] and ran_alone == [1] and outcomes[2] == {"alone": True}
    assert ts[1].x is ts[0].x


# -- keys, tables, errors ------------------------------------------------------------------

def test_hardness_key_validation_and_the_noise_kind_alias():
    assert Common().hardness == "uniform" and Common().noise_kind == "uniform"
    assert build_config(Common, {"noise_kind": "pair"}).hardness == "pair"
    both = build_config(Common, {"hardness": "zoom", "noise_kind": "zoom"})
    assert (both.hardness, both.noise_kind) == ("zoom", "zoom")
    with pytest.raises(ConfigError, match=r"hardness='asym'.*valid values.*'near_ood'.*'shift'"):
        build_config(Common, {"hardness": "asym"})
    with pytest.raises(ConfigError, match="stage x: hardness='zoom' and noise_kind='pair'"):
        build_config(Common, {"hardness": "zoom", "noise_kind": "pair"}, "stage x")
    with pytest.raises(ConfigError, match="class_map.*FashionMNIST"):
        build_config(Common, {"hardness": "class_map", "dataset": "FashionMNIST"})
    with pytest.raises(ConfigError, match="'zoom' perturbs images.*blobs"):
        build_config(Common, {"hardness": "zoom", "dataset": "blobs"})
    blobs = Dataset("blobs", np.zeros((20, 2), np.float32), np.arange(20) % 2, 2,
                    np.array(["train"] * 20), is_image=False)
    with pytest.raises(ValueError, match="'shift' perturbs images"):
        prepare(blobs, noise_ratio=0.2, hardness="shift")
    with pytest.raises(ValueError, match="unknown hardness 'blur'.*'uniform'.*'shift'"):
        inject_hardness(np.zeros((4, 1, 2, 2)), np.zeros(4, int), kind="blur", ratio=0.5,
                        num_classes=2, seed=0)


def test_per_sample_table_carries_the_ground_truth():
    t = TensorData(torch.zeros(4, 1), torch.tensor([0, 1, 0, 1]), np.array([0, 1, 1, 1]),
                   np.array([False, False, True, False]), np.arange(4), 2)
    table = per_sample_table(sample_id=t.sample_id, label=t.label, observed_label=t.observed_label,
                             **t.ground_truth(), split="train", hard=None, score=np.zeros(4))
    assert table["is_hard"].tolist() == [False, False, True, False]
    assert set(table["hardness"]) == {"uniform"} and set(table["noise_kind"]) == {"uniform"}
    old = per_sample_table(sample_id=[0], label=[0], observed_label=[1], is_noisy=[True],
                           noise_kind="pair", split="train", hard=None, score=[0.0])
    assert old["is_hard"].tolist() == [True] and old["hardness"].tolist() == ["pair"]
    with pytest.raises(ValueError, match="pass is_hard"):
        per_sample_table(sample_id=[0], label=[0], observed_label=[0], is_noisy=[False],
                         hardness="zoom", split="train", hard=None, score=[0.0])


def test_an_experiment_logs_is_hard_for_an_image_kind(tmp_path, mnist):
    from raydiff.experiments import train_classifier
    config = build_config(train_classifier.Config, {
        "dataset": "mnist5k", "subset_size": 300, "noise_ratio": 0.2, "hardness": "shift",
        "seed": 1, "epochs": 1, "model": "simple_nn", "hidden": [8], "lr_milestones": []})
    train_classifier.run(config, Report(tmp_path), mnist)
    table = pd.read_parquet(tmp_path / "per_sample.parquet")
    assert table["is_hard"].sum() == 60 and not table["is_noisy"].any()
    assert set(table["hardness"]) == {"shift"}
    assert (table["observed_label"] == table["label"]).all()


def test_a_run_is_named_by_hardness_once_not_by_its_alias_too():
    from raydiff.tune import describe
    params = [{"hardness": k, "noise_kind": k, "seed": 0} for k in ("zoom", "pair")]
    assert describe.varied_keys(params) == ["hardness"]
    table = pd.DataFrame({"sample_id": [0, 1, 2], "observed_label": [0, 1, 1],
                          "is_noisy": [False] * 3, "is_hard": [True, False, False],
                          "split": ["train"] * 3})
    found = describe.training_data(table, {"dataset": "mnist5k", "hardness": "zoom"})
    assert found["properties"]["hardness"] == "zoom"
    assert found["properties"]["hard_samples"] == 1 and found["properties"]["noisy_labels"] == 0
