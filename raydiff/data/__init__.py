"""Datasets, subsets, the kinds of hardness and device-resident tensors."""

from dataclasses import dataclass

import numpy as np
import torch

from raydiff.data.hardness import (HARDNESS_KINDS, Hardened, check_hardness,
                                   clean_model_probs, inject_hardness)
from raydiff.data.images import IMAGE_KINDS
from raydiff.data.noise import (LABEL_KINDS, NOISE_KINDS, class_map_for, inject_label_noise,
                                pair_permutation, transition_matrix)
from raydiff.data.registry import (DATASETS, Dataset, DatasetNotFound, data_key,
                                   default_data_root, load_dataset, make_blobs_dataset)
from raydiff.data.streams import (BATCH_STREAM, FOLD_STREAM, GAN_STREAM, HARDNESS_CLASS_STREAM,
                                  IMAGE_STREAM, INIT_STREAM, NOISE_STREAM,
                                  SMALL_LOSS_BATCH_STREAM, SPLIT_STREAM, STREAMS, rng_for)


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


def resolve_hardness(hardness=None, noise_kind=None):
    """The kind of hardness from the key and its old name (``noise_kind``): either, or
    both when they agree; "uniform" when neither is given."""
    if hardness is not None and noise_kind is not None and hardness != noise_kind:
        raise ValueError(f"hardness={hardness!r} and noise_kind={noise_kind!r} disagree; "
                         f"noise_kind is the old name of hardness: set only hardness")
    return check_hardness(hardness or noise_kind or "uniform")


@dataclass
class TensorData:
    """A dataset subset on the training device, with its bookkeeping on the host.

    x : float tensor (n, ...) on ``device``, normalised (the hard images of an image kind
        in place of the clean ones)
    y : long tensor (n,) on ``device``: the observed labels (after a label kind)
    label : (n,) true labels; is_noisy : (n,) bool, the label changed;
    sample_id : (n,) index in the Dataset
    is_hard : (n,) bool, the sample was made hard (any kind; ``is_noisy`` when None)
    hardness : the kind of hardness
    clean_pos, clean_x : the positions of the perturbed images and their clean images
        (normalised, on ``device``), so :func:`clean_positions` can restore a held-out
        split; None when no image was changed
    """

    x: torch.Tensor
    y: torch.Tensor
    label: np.ndarray
    is_noisy: np.ndarray
    sample_id: np.ndarray
    num_classes: int
    is_hard: np.ndarray = None
    hardness: str = "uniform"
    clean_pos: np.ndarray = None
    clean_x: torch.Tensor = None

    def __post_init__(self):
        if self.is_hard is None:
            self.is_hard = np.asarray(self.is_noisy, dtype=bool).copy()

    def __len__(self):
        return len(self.sample_id)

    @property
    def observed_label(self):
        return self.y.cpu().numpy()

    def ground_truth(self):
        """The per-sample truth columns of :func:`raydiff.experiments.base.per_sample_table`:
        {"is_noisy", "is_hard", "hardness"}."""
        return {"is_noisy": self.is_noisy, "is_hard": self.is_hard, "hardness": self.hardness}

    def take(self, idx):
        """The samples at positions ``idx`` (numpy int array) of this subset."""
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.as_tensor(idx, device=self.x.device)
        clean_pos = clean_x = None
        if self.clean_pos is not None:
            row = np.full(len(self), -1)
            row[self.clean_pos] = np.arange(len(self.clean_pos))
            row = row[idx]
            clean_pos = np.flatnonzero(row >= 0)
            clean_x = self.clean_x[torch.as_tensor(row[clean_pos], device=self.x.device)]
        return TensorData(self.x[t], self.y[t], self.label[idx], self.is_noisy[idx],
                          self.sample_id[idx], self.num_classes, self.is_hard[idx],
                          self.hardness, clean_pos, clean_x)


def _normaliser(clean, normalize):
    """x -> normalised x, with constants from the *clean* subset (float tensor)."""
    if normalize == "scalar":
        mean, std = clean.mean(), clean.std().clamp_min(1e-8)
        return lambda x: (x - mean) / std
    if normalize == "minus_one_one":
        return lambda x: x / 127.5 - 1.0
    if normalize == "none":
        return lambda x: x
    raise ValueError(f"unknown normalize {normalize!r}; valid: scalar, minus_one_one, none")


def prepare(ds, *, subset_size=None, subset_seed=0, noise_ratio=0.0, hardness=None,
            noise_seed=0, normalize="scalar", device="cpu", noise_kind=None):
    """Subset, make hard and normalise ``ds``, returning device-resident :class:`TensorData`.

    normalize: "scalar" (one mean and std over the whole subset, the benchmark's setting),
    "minus_one_one" (images scaled to [-1, 1], as the GANs use) or "none"; its constants
    come from the clean subset (an image kind keeps them anyway: docs/hardness.md).
    ``hardness`` (one of :data:`HARDNESS_KINDS`; ``noise_kind`` is its old name) makes
    ``int(noise_ratio * N)`` samples hard (:func:`inject_hardness`), drawn over the whole
    subset from the streams of ``noise_seed``: one seed and one subset, the same hard
    samples with the same labels and images for the same ``sample_id`` in every
    experiment, whatever split it later holds out (:func:`clean_positions` restores the
    true labels and clean images of a held-out split).
    """
    kind = resolve_hardness(hardness, noise_kind)
    idx = subset_indices(len(ds), subset_size=subset_size, subset_seed=subset_seed)
    raw = np.ascontiguousarray(ds.x[idx])
    label = ds.y[idx]
    hard = inject_hardness(raw, label, kind=kind, ratio=noise_ratio,
                           num_classes=ds.num_classes, seed=noise_seed, dataset=ds.name,
                           is_image=ds.is_image)
    x = torch.from_numpy(raw).to(device=device, dtype=torch.float32)
    norm = _normaliser(x, normalize)
    clean_pos = clean_x = None
    if kind in IMAGE_KINDS and hard.is_hard.any():
        clean_pos = np.flatnonzero(hard.is_hard)
        rows = torch.as_tensor(clean_pos, device=device)
        clean_x = norm(x[rows])
        x[rows] = torch.from_numpy(hard.x[clean_pos]).to(device=device, dtype=torch.float32)
    x = norm(x)
    return TensorData(x, torch.as_tensor(hard.observed, device=device), label,
                      hard.is_noisy, idx, ds.num_classes, hard.is_hard, kind, clean_pos,
                      clean_x)


def clean_positions(tensors, positions):
    """Give the samples at ``positions`` of ``tensors`` their true labels and clean images
    back (a held-out test split scored against the truth), in place; the other samples
    stay as they were made hard."""
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions):
        tensors.y[torch.as_tensor(positions, device=tensors.y.device)] = torch.as_tensor(
            tensors.label[positions], device=tensors.y.device, dtype=tensors.y.dtype)
        tensors.is_noisy = tensors.is_noisy.copy()
        tensors.is_noisy[positions] = False
        tensors.is_hard = tensors.is_hard.copy()
        tensors.is_hard[positions] = False
        if tensors.clean_pos is not None:
            back = np.isin(tensors.clean_pos, positions)
            if back.any():
                rows = torch.as_tensor(np.flatnonzero(back), device=tensors.x.device)
                tensors.x[torch.as_tensor(tensors.clean_pos[back], device=tensors.x.device)] = (
                    tensors.clean_x[rows])
                keep = torch.as_tensor(np.flatnonzero(~back), device=tensors.x.device)
                tensors.clean_pos, tensors.clean_x = tensors.clean_pos[~back], tensors.clean_x[keep]
    return tensors


__all__ = ["DATASETS", "HARDNESS_KINDS", "IMAGE_KINDS", "LABEL_KINDS", "NOISE_KINDS",
           "Hardened", "check_hardness", "class_map_for", "clean_model_probs",
           "clean_positions", "inject_hardness", "pair_permutation", "resolve_hardness",
           "transition_matrix", "Dataset", "DatasetNotFound", "TensorData", "data_key",
           "default_data_root", "inject_label_noise", "load_dataset", "make_blobs_dataset",
           "prepare", "rng_for", "subset_indices", "torch_generator", "derived_seed",
           "STREAMS", "NOISE_STREAM", "INIT_STREAM", "SPLIT_STREAM", "BATCH_STREAM",
           "SMALL_LOSS_BATCH_STREAM", "FOLD_STREAM", "GAN_STREAM", "HARDNESS_CLASS_STREAM",
           "IMAGE_STREAM"]
