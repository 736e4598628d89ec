"""The image kinds of hardness: near- and far-OOD images, zoomed and shifted ones.

Each kind is a raw perturbation (:func:`raw_perturbation`, float images in the data's own
range) followed by :func:`match_histograms`: every perturbed image gets exactly the pixel
values of the clean image it replaces, put in the perturbed image's rank order. So the
mean, std, minimum, maximum, fraction at background, every quantile of each image and
channel, the dtype, the value range and the subset's normalisation constants are those of
the clean data: a score that reads only per-image pixel statistics cannot tell the hard
samples from the others, and what a method finds is the image's content (a noisy, foreign,
zoomed or shifted picture), not its brightness. The raw perturbations alone end in other
ranges (a noisy MNIST digit has half its background lit; a photo has no black background),
which is what a trivial statistic would find (tests/test_hardness.py shows both).
"""

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_KINDS = ("near_ood", "far_ood", "zoom", "shift")
ZOOM = 1.75          # zoom: a centre crop of H / 1.75, resized back to H
NOISE_STD = 0.5      # near_ood: Gaussian noise of std 0.5 x the image's maximum


def background_value(images):
    """The background of a set of images: per channel, the most common value of the
    border pixels.

    images : (N, C, H, W) array. Returns (C,) array of ``images.dtype``.
    """
    border = np.concatenate([images[:, :, 0, :], images[:, :, -1, :],
                             images[:, :, :, 0], images[:, :, :, -1]], axis=2)
    out = []
    for c in range(images.shape[1]):
        values, counts = np.unique(border[:, c], return_counts=True)
        out.append(values[counts.argmax()])
    return np.asarray(out, dtype=images.dtype)


def near_ood(images, rng, *, lo, hi):
    """Gaussian pixel noise of std ``NOISE_STD`` x each image's maximum, clipped to
    [lo, hi]. images (k, C, H, W) -> float64 (k, C, H, W)."""
    x = images.astype(np.float64)
    std = NOISE_STD * x.reshape(len(x), -1).max(axis=1)
    return np.clip(x + rng.standard_normal(x.shape) * std[:, None, None, None], lo, hi)


FAR_SCALES = (2, 3, 4)   # far_ood: a window is 1/2, 1/3 or 1/4 of a photo's short side


@lru_cache(maxsize=8)
def _photos(height, width):
    # scikit-learn ships two photographs (a temple, a flower), so the far-OOD source is
    # offline and the same on every machine. Each is scaled once per FAR_SCALES entry m
    # so that its short side is m times the image size: a patch is then a plain H x W
    # window, no resize per image.
    from sklearn.datasets import load_sample_images

    out = []
    for im in load_sample_images().images:
        im = np.asarray(im, dtype=np.float64).transpose(2, 0, 1)[None]      # (1, 3, h, w)
        for m in FAR_SCALES:
            scale = m * max(height, width) / min(im.shape[2:])
            size = (max(height, round(im.shape[2] * scale)), max(width, round(im.shape[3] * scale)))
            out.append(_resize(im, size, antialias=True)[0])
    return tuple(out)


def _resize(x, size, antialias):
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False,
                         antialias=antialias).numpy()


def far_ood(count, shape, rng):
    """``count`` patches of scikit-learn's sample photographs, the size of ``shape``.

    Each patch: a random H x W window of a random photograph scaled (antialiased) so that
    the window spans a half, a third or a quarter of its short side (:data:`FAR_SCALES`,
    uniformly), grey (ITU-R 601 luma) replicated over the channels unless ``shape`` has 3
    channels (then RGB).
    shape : (C, H, W). Returns float64 (count, C, H, W) in [0, 255].
    """
    channels, height, width = shape
    photos = _photos(height, width)
    luma = np.array([0.299, 0.587, 0.114])
    out = np.empty((count, channels, height, width))
    for i in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        top = int(rng.integers(photo.shape[1] - height + 1))
        left = int(rng.integers(photo.shape[2] - width + 1))
        patch = photo[:, top:top + height, left:left + width]
        out[i] = patch if channels == 3 else np.tensordot(luma, patch, axes=1)[None]
    return out


def zoom(images):
    """A centre crop of round(H / ``ZOOM``) x round(W / ``ZOOM``), resized back to H x W
    (bilinear). images (k, C, H, W) -> float64 (k, C, H, W)."""
    _, _, height, width = images.shape
    ch, cw = max(1, round(height / ZOOM)), max(1, round(width / ZOOM))
    top, left = (height - ch) // 2, (width - cw) // 2
    crop = images[:, :, top:top + ch, left:left + cw]
    return _resize(crop, (height, width), antialias=False)


def shift(images, rng, *, background):
    """Each image translated by ceil(W / 3) pixels (10 on 28 x 28) to the left or the
    right (exactly half of the ``k`` images each way, in a seeded order), the uncovered
    columns filled with ``background`` (C,). The columns pushed out are lost, so the raw
    image has fewer stroke pixels than the clean one; :func:`match_histograms` gives them
    back as slightly thicker strokes. images (k, C, H, W) -> float64 (k, C, H, W)."""
    k, _, _, width = images.shape
    s = math.ceil(width / 3)
    out = np.broadcast_to(np.asarray(background, dtype=np.float64)[None, :, None, None],
                          images.shape).copy()
    right = rng.permutation(np.arange(k) < k // 2)
    out[right, :, :, s:] = images[right, :, :, :width - s]
    out[~right, :, :, :width - s] = images[~right, :, :, s:]
    return out


def raw_perturbation(kind, images, rng, *, lo, hi, background):
    """The perturbation of ``kind`` before histogram matching: float64 images (k, C, H, W)
    in [lo, hi] (their pixel statistics differ from the clean images')."""
    if kind == "near_ood":
        return near_ood(images, rng, lo=lo, hi=hi)
    if kind == "far_ood":
        return np.clip(far_ood(len(images), images.shape[1:], rng), lo, hi)
    if kind == "zoom":
        return zoom(images)
    if kind == "shift":
        return shift(images, rng, background=background)
    raise ValueError(f"unknown image kind {kind!r}; valid: {list(IMAGE_KINDS)}")


def _smooth(x, radius=2):
    """Local brightness of images (k, C, H, W) as float64: a box filter of width
    2 * radius + 1 applied twice along each axis (a triangular kernel reaching 2 * radius
    pixels), zero padding, by cumulative sums (a few passes over the data, whatever the
    radius)."""
    out = np.asarray(x, dtype=np.float64)
    width = 2 * radius + 1
    for axis in (2, 3, 2, 3):
        pad = [(0, 0)] * 4
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad), axis=axis)
        n = out.shape[axis]
        out = (c.take(np.arange(width, width + n), axis=axis)
               - c.take(np.arange(n), axis=axis)) / width
    return out


def match_histograms(perturbed, reference):
    """Give each perturbed image exactly the pixel values of its reference, in the
    perturbed image's rank order (exact histogram specification, per image and channel).

    Ties of the perturbed image (a flat background, clipped noise) are broken by its local
    brightness (:func:`_smooth` at three reaches, up to 8 pixels), so the values a tie has
    to take go to the middle of a bright plateau and next to the bright structure first (a shifted digit that lost columns gets slightly
    thicker strokes, not a stripe at the top), then by position.

    Parameters
    ----------
    perturbed : float array (k, C, H, W), any range
    reference : array (k, C, H, W), the clean images (any dtype)

    Returns
    -------
    matched : array (k, C, H, W) of ``reference.dtype``; image i channel c holds the
        multiset of values of ``reference[i, c]``; a brighter pixel of ``perturbed[i, c]``
        never gets a smaller value than a darker one.
    """
    k, c = reference.shape[:2]
    key = perturbed.reshape(k, c, -1)
    # three reaches, summed: inside a flat plateau (a zoomed stroke's saturated core) the
    # wider ones still rank the pixels by depth, so a tie is cut along the structure,
    # not in reading order
    local = sum(_smooth(perturbed, radius) for radius in (1, 2, 4))
    order = np.lexsort((local.reshape(k, c, -1), key), axis=-1)
    values = np.sort(reference.reshape(k, c, -1), axis=-1)
    out = np.empty_like(values)
    np.put_along_axis(out, order, values, axis=-1)
    return out.reshape(reference.shape)


def perturb(kind, images, rng, *, lo, hi, background):
    """The hard images of ``kind``: :func:`raw_perturbation` then :func:`match_histograms`
    against ``images`` itself. images (k, C, H, W) -> array of the same shape and dtype.

    near_ood is ranked by its noisy pixels as they are; the resampled kinds (far_ood,
    zoom, shift) by a light smoothing of them (:func:`_smooth`, radius 1), since bilinear
    resampling leaves sub-grey-level ripples on a stroke that would otherwise decide, in
    a lattice pattern, which part of an enlarged stroke keeps the clean image's values."""
    raw = raw_perturbation(kind, images, rng, lo=lo, hi=hi, background=background)
    return match_histograms(raw if kind == "near_ood" else _smooth(raw, 1), images)
