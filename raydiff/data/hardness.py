"""The ten kinds of hardness, one entry point: :func:`inject_hardness`.

A kind changes ``int(p * N)`` samples of a subset: the label kinds (:mod:`raydiff.data.noise`)
their labels, the image kinds (:mod:`raydiff.data.images`) their images (labels kept). All
draws come from the experiment seed's streams: which samples and their per-sample draws
from NOISE, the class structure (pair permutation, asymmetric rows) from HARDNESS_CLASS,
the image draws from IMAGE; so one seed and one subset give the same hard samples, with the
same new labels or images, in every experiment (docs/hardness.md).
"""

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from raydiff.data.images import IMAGE_KINDS, background_value, perturb
from raydiff.data.noise import LABEL_KINDS, class_map_for, inject_label_noise
from raydiff.data.streams import HARDNESS_CLASS_STREAM, IMAGE_STREAM, NOISE_STREAM, rng_for

HARDNESS_KINDS = LABEL_KINDS + IMAGE_KINDS
BLOCK = 4096     # images perturbed (and pooled) per block: bounds the float64 memory


def check_hardness(kind):
    """ValueError naming ``hardness`` and the valid kinds unless ``kind`` is one."""
    if kind not in HARDNESS_KINDS:
        raise ValueError(f"unknown hardness {kind!r}; valid values: {list(HARDNESS_KINDS)}")
    return kind


@dataclass
class Hardened:
    """A subset after :func:`inject_hardness`.

    x : (N, ...) the inputs, the hard rows replaced for an image kind (same dtype)
    observed : (N,) int64 labels after a label kind (the true labels for an image kind)
    is_hard : (N,) bool, True exactly for the changed samples
    kind : the kind of hardness
    """

    x: np.ndarray
    observed: np.ndarray
    is_hard: np.ndarray
    kind: str

    @property
    def is_noisy(self):
        """(N,) bool: the samples whose label changed (none for an image kind)."""
        return self.is_hard if self.kind in LABEL_KINDS else np.zeros_like(self.is_hard)


def clean_model_probs(x, labels, num_classes, *, weight_decay=1e-2):
    """The softmax of an L2-regularised softmax regression trained on the clean labels.

    The instance kind's annotator: what a simple model finds ambiguous. Inputs are
    flattened (images average-pooled by 2 until at most 256 values remain), standardised
    per feature; the weights start at zero and are fitted by full-batch L-BFGS in float64
    on the CPU: a convex problem, no random state, the same model for every seed.
    Fitted to a gradient of 1e-6 (at most 200 iterations): about a second for mnist5k;
    the last result is kept per process (a pack prepares the same subset per config).

    Parameters
    ----------
    x : array (N, ...) ; labels : int array (N,) ; num_classes : int
    weight_decay : float, the L2 penalty on the weights (keeps the probabilities soft)

    Returns
    -------
    probs : float64 array (N, num_classes), rows sum to 1
    """
    x, labels = np.ascontiguousarray(x), np.ascontiguousarray(labels, dtype=np.int64)
    digest = hashlib.sha1(x.view(np.uint8).reshape(-1)).hexdigest() + hashlib.sha1(
        labels.view(np.uint8)).hexdigest() + str(x.shape)
    return _fitted(digest, x, labels, num_classes, weight_decay).copy()


_LAST = {}


def _fitted(digest, x, labels, num_classes, weight_decay):
    key = (digest, num_classes, weight_decay)
    if key not in _LAST:
        _LAST.clear()
        _LAST[key] = _softmax_regression(x, labels, num_classes, weight_decay)
    return _LAST[key]


def _features(x, block=BLOCK):
    """Flattened inputs (N, D) float64, images average-pooled by 2 until D <= 256 (pooled
    in float32 blocks, so CIFAR-10's 60,000 images never exist in float64 unpooled)."""
    parts = []
    for start in range(0, len(x), block):
        t = torch.from_numpy(np.ascontiguousarray(x[start:start + block])).to(torch.float32)
        if t.dim() == 4:
            while t[0].numel() > 256 and min(t.shape[2:]) >= 2:
                t = torch.nn.functional.avg_pool2d(t, 2)
        parts.append(t.reshape(len(t), -1).double())
    return torch.cat(parts)


def _softmax_regression(x, labels, num_classes, weight_decay):
    t = _features(x)
    t = (t - t.mean(0)) / t.std(0).clamp_min(1e-6)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    w = torch.zeros(t.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, max_eval=250, tolerance_grad=1e-6,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(t @ w + b, y)
                + 0.5 * weight_decay * (w * w).sum())
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return torch.softmax(t @ w + b, dim=1).numpy()


def inject_hardness(x, labels, *, kind, ratio, num_classes, seed, dataset=None,
                    is_image=True):
    """Make ``int(N * ratio)`` samples of a subset hard in the way ``kind`` says.

    Label kinds: :func:`raydiff.data.noise.inject_label_noise` (``class_map`` reads the
    map of ``dataset``; ``instance`` trains :func:`clean_model_probs` on ``x``). Image
    kinds: the chosen images (uniformly, the same samples as ``uniform`` for the seed)
    replaced by :func:`raydiff.data.images.perturb` with the subset's own value range and
    background, labels kept. Nothing is changed in place.

    Parameters
    ----------
    x : array (N, C, H, W) of images (uint8 for the image datasets), or (N, D) features
        (label kinds only)
    labels : int array (N,), the true labels
    kind : one of :data:`HARDNESS_KINDS`, keyword-only
    ratio : float in [0, 1], keyword-only, the proportion p
    num_classes : int, keyword-only
    seed : int, keyword-only, the experiment seed (every stream is derived from it)
    dataset : str, keyword-only, the dataset's name (``class_map`` only)
    is_image : bool, keyword-only; an image kind on non-image data is refused

    Returns
    -------
    :class:`Hardened`
    """
    check_hardness(kind)
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"noise_ratio (the proportion of hard samples) must be in [0, 1], "
                         f"got {ratio}")
    rng = rng_for(seed, NOISE_STREAM)
    if kind in LABEL_KINDS:
        extra = {}
        if kind == "class_map":
            extra["class_map"] = class_map_for(dataset)
        elif kind == "instance" and int(len(labels) * ratio) > 0:
            extra["probs"] = clean_model_probs(x, labels, num_classes)
        observed, mask = inject_label_noise(
            labels, ratio=ratio, num_classes=num_classes, rng=rng, kind=kind,
            class_rng=rng_for(seed, HARDNESS_CLASS_STREAM), **extra)
        return Hardened(x, observed, mask, kind)
    if not is_image or np.asarray(x).ndim != 4:
        raise ValueError(f"hardness {kind!r} perturbs images; dataset {dataset!r} has none "
                         f"(pick a label kind: {list(LABEL_KINDS)})")
    chosen = np.sort(rng.choice(len(labels), size=int(len(labels) * ratio), replace=False))
    out = np.array(x, copy=True)
    if len(chosen):
        image_rng, lo, hi = rng_for(seed, IMAGE_STREAM), float(x.min()), float(x.max())
        background = background_value(x)
        for start in range(0, len(chosen), BLOCK):
            rows = chosen[start:start + BLOCK]
            out[rows] = perturb(kind, x[rows], image_rng, lo=lo, hi=hi, background=background)
    mask = np.zeros(len(labels), dtype=bool)
    mask[chosen] = True
    return Hardened(out, labels.copy(), mask, kind)
