"""Datasets, subsets, label noise and device-resident tensors."""

from dataclasses import dataclass

import numpy as np
import torch

from raydiff.data.noise import NOISE_KINDS, inject_label_noise, pair_permutation
from raydiff.data.registry import (DATASETS, Dataset, DatasetNotFound, default_data_root,
                                   load_dataset, make_blobs_dataset)
from raydiff.data.streams import (BATCH_STREAM, FOLD_STREAM, GAN_STREAM, INIT_STREAM,
                                  NOISE_STREAM, SMALL_LOSS_BATCH_STREAM, SPLIT_STREAM, STREAMS)


def rng_for(seed, stream):
    """The numpy Generator of ``stream`` for experiment seed ``seed``."""
    return np.random.default_rng([int(seed), int(stream)])


def derived_seed(seed, stream, *more):
    """An int seed for ``stream`` of experiment seed ``seed`` (``more`` tells draws apart)."""
    return int(np.random.default_rng([int(seed), int(stream), *map(int, more)]).integers(2**31))


def torch_generator(seed, stream=INIT_STREAM):
    """A CPU torch.Generator for ``seed`` and ``stream`` (model initialisation by default)."""
    return torch.Generator().manual_seed(int(rng_for(seed, stream).integers(2**62)))


def subset_indices(n, *, subset_size, subset_seed):
    """Shuffle ``range(n)`` with ``subset_seed`` and keep the first ``subset_size`` (all if None)."""
    order = np.random.default_rng(subset_seed).permutation(n)
    return np.sort(order[:subset_size]) if subset_size else np.arange(n)


@dataclass
class TensorData:
    """A dataset subset on the training device, with its bookkeeping on the host.

    x : float tensor (n, ...) on ``device``, normalised
    y : long tensor (n,) on ``device``: the observed labels (after injected noise)
    label : (n,) true labels; is_noisy : (n,) bool; sample_id : (n,) index in the Dataset
    """

    x: torch.Tensor
    y: torch.Tensor
    label: np.ndarray
    is_noisy: np.ndarray
    sample_id: np.ndarray
    num_classes: int

    def __len__(self):
        return len(self.sample_id)

    @property
    def observed_label(self):
        return self.y.cpu().numpy()

    def take(self, idx):
        """The samples at positions ``idx`` (numpy int array) of this subset."""
        t = torch.as_tensor(idx, device=self.x.device)
        return TensorData(self.x[t], self.y[t], self.label[idx], self.is_noisy[idx],
                          self.sample_id[idx], self.num_classes)


def prepare(ds, *, subset_size=None, subset_seed=0, noise_ratio=0.0, noise_kind="uniform",
            noise_seed=0, normalize="scalar", device="cpu"):
    """Subset, corrupt labels and normalise ``ds``, returning device-resident :class:`TensorData`.

    normalize: "scalar" (one mean and std over the whole subset, the benchmark's setting),
    "minus_one_one" (images scaled to [-1, 1], as the GANs use) or "none".
    Label noise (``noise_kind`` uniform or pair, :func:`inject_label_noise`) is drawn over
    the whole subset from the NOISE stream of ``noise_seed``: one seed and one subset, the
    same flipped label for the same ``sample_id`` in every experiment, whatever split it
    later holds out (:func:`clean_positions` restores the true labels of a held-out split).
    """
    idx = subset_indices(len(ds), subset_size=subset_size, subset_seed=subset_seed)
    x = torch.from_numpy(np.ascontiguousarray(ds.x[idx])).to(device=device, dtype=torch.float32)
    if normalize == "scalar":
        x = (x - x.mean()) / x.std().clamp_min(1e-8)
    elif normalize == "minus_one_one":
        x = x / 127.5 - 1.0
    elif normalize != "none":
        raise ValueError(f"unknown normalize {normalize!r}; valid: scalar, minus_one_one, none")
    label = ds.y[idx]
    observed, noisy = inject_label_noise(label, ratio=noise_ratio, num_classes=ds.num_classes,
                                         rng=rng_for(noise_seed, NOISE_STREAM), kind=noise_kind)
    return TensorData(x, torch.as_tensor(observed, device=device), label, noisy, idx,
                      ds.num_classes)


def clean_positions(tensors, positions):
    """Give the samples at ``positions`` of ``tensors`` their true labels back (a held-out
    test split scored against the truth), in place; the other samples keep their noise."""
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions):
        tensors.y[torch.as_tensor(positions, device=tensors.y.device)] = torch.as_tensor(
            tensors.label[positions], device=tensors.y.device, dtype=tensors.y.dtype)
        tensors.is_noisy = tensors.is_noisy.copy()
        tensors.is_noisy[positions] = False
    return tensors


__all__ = ["DATASETS", "NOISE_KINDS", "clean_positions", "pair_permutation",
           "Dataset", "DatasetNotFound", "TensorData", "default_data_root",
           "inject_label_noise", "load_dataset", "make_blobs_dataset", "prepare", "rng_for",
           "subset_indices", "torch_generator", "derived_seed", "STREAMS", "NOISE_STREAM",
           "INIT_STREAM", "SPLIT_STREAM", "BATCH_STREAM", "SMALL_LOSS_BATCH_STREAM",
           "FOLD_STREAM", "GAN_STREAM"]
