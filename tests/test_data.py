import gzip
import pickle
import struct

import numpy as np
import pytest

from raydiff.data import (DatasetNotFound, clean_positions, inject_label_noise, load_dataset,
                          pair_permutation, prepare, rng_for, NOISE_STREAM)
from raydiff.experiments.config import Common, ConfigError, build_config


# -- label noise -------------------------------------------------------------------------

def test_noise_exact_count_always_changes_and_returns_mask():
    labels = np.repeat(np.arange(10), 100)
    noisy, mask = inject_label_noise(labels, ratio=0.37, num_classes=10,
                                     rng=np.random.default_rng(1))
    assert mask.sum() == int(1000 * 0.37)
    assert (noisy[mask] != labels[mask]).all()
    assert (noisy[~mask] == labels[~mask]).all()
    assert noisy.min() >= 0 and noisy.max() < 10
    assert (labels == np.repeat(np.arange(10), 100)).all()     # input untouched


def test_noise_is_seeded_and_uniform_over_other_classes():
    labels = np.zeros(30000, dtype=int)
    a = inject_label_noise(labels, ratio=0.5, num_classes=4, rng=np.random.default_rng(7))
    b = inject_label_noise(labels, ratio=0.5, num_classes=4, rng=np.random.default_rng(7))
    c = inject_label_noise(labels, ratio=0.5, num_classes=4, rng=np.random.default_rng(8))
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert not (a[1] == c[1]).all()
    counts = np.bincount(a[0][a[1]], minlength=4)
    assert counts[0] == 0
    assert np.allclose(counts[1:] / counts[1:].sum(), 1 / 3, atol=0.02)


def test_noise_edges_and_bad_ratio():
    labels = np.arange(10) % 3
    assert inject_label_noise(labels, ratio=0.0, num_classes=3, rng=np.random.default_rng(0))[1].sum() == 0
    assert inject_label_noise(labels, ratio=1.0, num_classes=3, rng=np.random.default_rng(0))[1].all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inject_label_noise(labels, ratio=1.5, num_classes=3, rng=np.random.default_rng(0))


def test_prepare_same_seed_same_noisy_labels_and_scalar_normalisation():
    ds = load_dataset("digits")
    a = prepare(ds, subset_size=500, noise_ratio=0.2, noise_seed=3)
    b = prepare(ds, subset_size=500, noise_ratio=0.2, noise_seed=3)
    assert (a.observed_label == b.observed_label).all() and (a.is_noisy == b.is_noisy).all()
    assert a.is_noisy.sum() == 100
    assert (a.label == ds.y[a.sample_id]).all()
    assert abs(a.x.mean().item()) < 1e-4 and abs(a.x.std().item() - 1) < 1e-3


def test_uniform_noise_is_bit_identical_to_the_draw_before_pair_noise():
    # golden values from the implementation before noise_kind existed: existing numbers
    # must not move
    labels = np.arange(40) % 10
    noisy, mask = inject_label_noise(labels, ratio=0.25, num_classes=10,
                                     rng=np.random.default_rng(5))
    assert np.flatnonzero(mask).tolist() == [0, 2, 10, 16, 18, 20, 23, 25, 27, 38]
    assert noisy[mask].tolist() == [2, 6, 7, 9, 1, 3, 5, 4, 6, 4]
    # and the same as the two draws written out (choice, then offsets 1..C-1)
    rng = np.random.default_rng(11)
    big = np.random.default_rng(0).integers(0, 7, size=3000)
    chosen = rng.choice(3000, size=900, replace=False)
    expect = big.copy()
    expect[chosen] = (big[chosen] + rng.integers(1, 7, size=900)) % 7
    got, _ = inject_label_noise(big, ratio=0.3, num_classes=7, rng=np.random.default_rng(11),
                                kind="uniform")
    assert (got == expect).all()


@pytest.mark.parametrize("num_classes", [2, 3, 10, 100])
def test_pair_permutation_has_no_fixed_point_and_is_seeded(num_classes):
    perms = [pair_permutation(num_classes, np.random.default_rng(s)) for s in range(30)]
    for perm in perms:
        assert sorted(perm.tolist()) == list(range(num_classes))        # a permutation
        assert (perm != np.arange(num_classes)).all()                    # no fixed point
    again = pair_permutation(num_classes, np.random.default_rng(4))
    assert (again == perms[4]).all()
    if num_classes > 3:             # seeded, not one fixed shift
        assert len({tuple(p) for p in perms}) > 1


def test_pair_noise_sends_each_class_to_its_one_partner_with_the_exact_count():
    labels = np.repeat(np.arange(10), 137)
    noisy, mask = inject_label_noise(labels, ratio=0.3, num_classes=10,
                                     rng=np.random.default_rng(2), kind="pair",
                                     class_rng=np.random.default_rng(9))
    assert mask.sum() == int(len(labels) * 0.3)                  # same count as uniform
    assert (noisy[~mask] == labels[~mask]).all()
    # planted truth: the permutation of the class generator alone, whatever the ratio
    perm = pair_permutation(10, np.random.default_rng(9))
    assert (noisy[mask] == perm[labels[mask]]).all()
    for c in range(10):             # every flipped label of class c lands on one class
        assert set(noisy[mask & (labels == c)].tolist()) == {perm[c]}
    # same generator state: the same samples flipped as uniform noise, the same flips again
    _, uniform_mask = inject_label_noise(labels, ratio=0.3, num_classes=10,
                                         rng=np.random.default_rng(2))
    assert (uniform_mask == mask).all()
    again = inject_label_noise(labels, ratio=0.3, num_classes=10, rng=np.random.default_rng(2),
                               kind="pair", class_rng=np.random.default_rng(9))
    assert (again[0] == noisy).all() and (again[1] == mask).all()
    with pytest.raises(ValueError, match="class_rng"):
        inject_label_noise(labels, ratio=0.3, num_classes=10, rng=np.random.default_rng(2),
                           kind="pair")
    with pytest.raises(ValueError, match="unknown hardness.*'asym'.*uniform.*pair"):
        inject_label_noise(labels, ratio=0.3, num_classes=10, rng=np.random.default_rng(2),
                           kind="asym")


def test_noise_kind_config_key_is_validated_and_reaches_prepare():
    assert Common().noise_kind == "uniform"
    assert build_config(Common, {"noise_kind": "pair"}).noise_kind == "pair"
    with pytest.raises(ConfigError, match=r"noise_kind='asym'.*\['uniform', 'pair', "):
        build_config(Common, {"noise_kind": "asym"})
    ds = load_dataset("digits")
    pair = prepare(ds, subset_size=500, noise_ratio=0.2, noise_kind="pair", noise_seed=3)
    uniform = prepare(ds, subset_size=500, noise_ratio=0.2, noise_seed=3)
    assert pair.is_noisy.sum() == 100 and (pair.is_noisy == uniform.is_noisy).all()
    flips = {(int(a), int(b)) for a, b in zip(pair.label[pair.is_noisy],
                                              pair.observed_label[pair.is_noisy])}
    assert len(flips) <= 10 and len({a for a, _ in flips}) == len(flips)   # one partner each


def test_clean_positions_restores_true_labels_of_a_held_out_split_only():
    ds = load_dataset("digits")
    t = prepare(ds, subset_size=400, noise_ratio=0.4, noise_seed=1)
    before_y, before_noisy = t.observed_label.copy(), t.is_noisy.copy()
    held = np.arange(0, 400, 4)
    clean_positions(t, held)
    assert (t.observed_label[held] == t.label[held]).all() and not t.is_noisy[held].any()
    rest = np.setdiff1d(np.arange(400), held)
    assert (t.observed_label[rest] == before_y[rest]).all()
    assert (t.is_noisy[rest] == before_noisy[rest]).all() and before_noisy[held].any()


# -- loading from files in torchvision's layout ---------------------------------------------

def _idx(path, array, gz=False):
    dims = array.shape
    code = 0x08
    header = struct.pack(">HBB", 0, code, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "KMNIST"])
def test_mnist_family_from_idx_files(tmp_path, name):
    raw = tmp_path / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tr_x, te_x = rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 256, (5, 28, 28))
    tr_y, te_y = np.arange(12) % 10, np.arange(5) % 10
    _idx(raw / "train-images-idx3-ubyte", tr_x)
    _idx(raw / "train-labels-idx1-ubyte", tr_y)
    _idx(raw / "t10k-images-idx3-ubyte", te_x)
    _idx(raw / "t10k-labels-idx1-ubyte", te_y)
    ds = load_dataset(name, root=tmp_path)
    assert ds.x.shape == (17, 1, 28, 28) and ds.x.dtype == np.uint8
    assert (ds.x[:12, 0] == tr_x).all() and (ds.x[12:, 0] == te_x).all()
    assert (ds.y == np.concatenate([tr_y, te_y])).all()
    assert list(ds.source_split).count("test") == 5


def test_cifar10_and_cifar100_from_pickle_batches(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for i in range(1, 6):
        batch = {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [i % 10, 3]}
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    (base / "test_batch").write_bytes(pickle.dumps(
        {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "labels": [0, 1, 2]}))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    ds = load_dataset("CIFAR10", root=tmp_path)
    assert ds.x.shape == (13, 3, 32, 32) and ds.num_classes == 10
    assert list(ds.y[-3:]) == [0, 1, 2]

    base = tmp_path / "cifar-100-python"
    base.mkdir()
    for part, n in (("train", 4), ("test", 2)):
        (base / part).write_bytes(pickle.dumps(
            {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": list(range(n))}))
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"f{i}" for i in range(100)]}))
    ds = load_dataset("CIFAR100", root=tmp_path)
    assert ds.x.shape == (6, 3, 32, 32) and ds.num_classes == 100


def test_imagefolder_tree(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((40, 50, 3), 40 * i, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset("ImageFolder", root=tmp_path, image_size=16)
    assert ds.x.shape == (6, 3, 16, 16) and ds.class_names == ["cat", "dog"]
    assert list(ds.y) == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("name", ["MNIST", "CIFAR10", "ImageFolder"])
def test_missing_dataset_says_how_to_get_it(tmp_path, name):
    with pytest.raises(DatasetNotFound) as err:
        load_dataset(name, root=tmp_path / "empty")
    assert "--data-root" in str(err.value) and "--download" in str(err.value)


def test_unknown_dataset_lists_valid_ones():
    with pytest.raises(ValueError, match="mnist5k"):
        load_dataset("imagenet22k")


def test_embedded_datasets_load_offline():
    ds = load_dataset("mnist5k")
    assert ds.x.shape == (5000, 1, 28, 28) and ds.num_classes == 10
    assert set(np.unique(ds.y)) == set(range(10))
    blobs = load_dataset("blobs")
    assert blobs.x.shape == (500, 2) and set(np.unique(blobs.y)) == {0, 1}
