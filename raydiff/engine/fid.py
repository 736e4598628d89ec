"""Frechet distances between image sets, and the feature networks they are measured in.

FID compares the Gaussian statistics (mean, covariance) of two sets of features:
``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. GASTeN measures it in three spaces:

- ``fid_<net>``: features of a generic image network. The original uses InceptionV3's
  2048-d pool layer (images resized to 299, grey repeated to 3 channels); raydiff uses it
  when its weights are on this machine (a path, or torchvision's cache) and otherwise a
  small CNN it trains on the dataset itself (:class:`raydiff.models.gasten.FeatureCNN`).
  The metric is named for the network and its weights, so numbers of different extractors
  never mix: ``fid_inception`` is the TF-FID Inception of the papers (pytorch-fid's
  ``pt_inception-2015-12-05`` weights in :func:`tf_fid_inception_v3`, the network with
  TensorFlow's pooling), ``fid_inception_tv`` InceptionV3 with torchvision's ImageNet
  weights (a different network and different numbers), ``fid_smallcnn`` the CNN.
- ``focd``: the same distance in the classifier's flatten features;
- ``acd``: not a distance between sets, the mean |0.5 - C(G(z))| (lower = more ambiguous).
"""

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg


def feature_stats(features):
    """(mean (D,), covariance (D, D)) of an (N, D) array of features, float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"feature_stats needs an (N >= 2, D) array, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps=1e-6):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (>= 0; 0 for equal
    statistics). A singular product gets ``eps`` added to the diagonals, as is usual."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # features with dead (always-zero) units give singular covariances: offset below
        warnings.simplefilter("error", linalg.LinAlgWarning)
        try:
            covmean = linalg.sqrtm(sigma1 @ sigma2)
            ok = np.isfinite(covmean).all()
        except (linalg.LinAlgWarning, linalg.LinAlgError, ValueError):
            ok = False
    if not ok:
        offset = np.eye(len(sigma1)) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return float(max(value, 0.0))


def fid(features_a, features_b):
    """Frechet distance between two (N, D) feature sets."""
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def acd(probs):
    """Average confusion distance: mean |0.5 - p| of classifier outputs ``probs`` (N,)."""
    return float(np.mean(np.abs(0.5 - np.asarray(probs, dtype=np.float64))))


@torch.no_grad()
def embed(fn, x, *, batch_size=512):
    """``fn`` (images -> features) over tensor ``x`` in no-grad batches -> numpy (N, D)."""
    return torch.cat([fn(x[i:i + batch_size]).flatten(1).float().cpu()
                      for i in range(0, len(x), batch_size)]).numpy()


# -- InceptionV3 -----------------------------------------------------------------------

INCEPTION_ENV = "RAYDIFF_INCEPTION_WEIGHTS"


def find_inception_weights(path=None):
    """Path of InceptionV3 weights on this machine, or None: ``path`` if given (it must
    exist), else ``$RAYDIFF_INCEPTION_WEIGHTS``, else a cached download in torch hub's
    checkpoints folder: pytorch-fid's TF-FID file first (the papers' metric), then
    torchvision's."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"inception_weights={path!r} is not a file; give the path of "
                                    f"an InceptionV3 state dict (pytorch-fid's TF-FID "
                                    f"pt_inception-2015-12-05 file, or torchvision's "
                                    f"inception_v3 weights), or leave it unset "
                                    f"to use the feature network raydiff trains")
        return Path(path)
    env = os.environ.get(INCEPTION_ENV)
    if env and Path(env).is_file():
        return Path(env)
    from torchvision.models import Inception_V3_Weights

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for name in (TF_FID_FILE, Path(Inception_V3_Weights.IMAGENET1K_V1.url).name):
        if (folder / name).is_file():
            return folder / name
    return None


# the name pytorch-fid caches its TF-FID Inception weights under
TF_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"



# feature-net name (and so FID metric name) per InceptionV3 weights source
INCEPTION_NAMES = {"torchvision": "inception_tv", "tf_fid": "inception"}


def _load_state(weights_path):
    return torch.load(weights_path, map_location="cpu", weights_only=True)


def _source_of(state, weights_path):
    rows = state["fc.weight"].shape[0] if "fc.weight" in state else None
    if rows == 1008:
        return "tf_fid"
    if rows == 1000:
        return "torchvision"
    raise ValueError(f"{weights_path}: not an InceptionV3 state dict (fc.weight has "
                     f"{rows} rows; torchvision's has 1000, TF-FID's 1008)")


def inception_source(weights_path):
    """"torchvision" or "tf_fid" for an InceptionV3 state dict: the TF-FID weights
    (pytorch-fid's ``pt_inception-2015-12-05``) end in a 1008-way classifier, torchvision's
    ImageNet weights in a 1000-way one."""
    return _source_of(_load_state(weights_path), weights_path)


def inception_name(weights_path):
    """The feature-net name of these weights: ``inception_tv`` or ``inception`` (TF-FID)."""
    return INCEPTION_NAMES[inception_source(weights_path)]


# -- the TF-FID Inception ----------------------------------------------------------------
# The graph of TensorFlow's 2015-12-05 Inception (the one TF-FID measures in) is
# torchvision's Inception3 but for the pool branch of nine mixed blocks (Mixed_5b..5d,
# 6b..6e, 7b): TF's SAME-padded average pool divides by the pixels inside the image, not
# by 9, and the last block (Mixed_7c) max-pools there. Same submodule names, so the same
# state-dict keys.

def _tf_avg_pool(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _tf_max_pool(x):
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


_TF_BLOCKS = ("TFInceptionA", "TFInceptionC", "TFInceptionE")


def __getattr__(name):
    # The TF blocks subclass torchvision's, which takes ~2 s to import: they are made on
    # first use, and reachable as module attributes (so they pickle and can be imported).
    if name in _TF_BLOCKS:
        return dict(zip(_TF_BLOCKS, _tf_blocks()))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _tf_blocks():
    from torchvision.models.inception import InceptionA, InceptionC, InceptionE

    class TFInceptionA(InceptionA):
        """Mixed_5b/5c/5d: the average pool leaves the zero padding out of its mean."""

        def _forward(self, x):
            b5x5 = self.branch5x5_2(self.branch5x5_1(x))
            b3x3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return [self.branch1x1(x), b5x5, b3x3, self.branch_pool(_tf_avg_pool(x))]

    class TFInceptionC(InceptionC):
        """Mixed_6b..6e: the average pool leaves the zero padding out of its mean."""

        def _forward(self, x):
            b7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            dbl = x
            for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                         self.branch7x7dbl_4, self.branch7x7dbl_5):
                dbl = conv(dbl)
            return [self.branch1x1(x), b7x7, dbl, self.branch_pool(_tf_avg_pool(x))]

    class TFInceptionE(InceptionE):
        """Mixed_7b (``max_pool=False``: average pool without the padding) and Mixed_7c
        (``max_pool=True``: a 3x3 stride-1 max pool, as TF's graph has it)."""

        def __init__(self, in_channels, conv_block=None, *, max_pool=False):
            super().__init__(in_channels, conv_block)
            self.max_pool = bool(max_pool)

        def extra_repr(self):
            return f"max_pool={self.max_pool}"

        def _forward(self, x):
            b3x3 = self.branch3x3_1(x)
            b3x3 = torch.cat([self.branch3x3_2a(b3x3), self.branch3x3_2b(b3x3)], 1)
            dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            dbl = torch.cat([self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl)], 1)
            pool = _tf_max_pool(x) if self.max_pool else _tf_avg_pool(x)
            return [self.branch1x1(x), b3x3, dbl, self.branch_pool(pool)]

    blocks = TFInceptionA, TFInceptionC, TFInceptionE
    for cls in blocks:
        cls.__qualname__ = cls.__name__       # found by pickle through __getattr__ above
    return blocks


def tf_fid_inception_v3():
    """The TF-FID InceptionV3, randomly initialised: torchvision's ``Inception3`` with a
    1008-way classifier, no aux classifier, no input transform and TensorFlow's pooling in
    the mixed blocks (see above). Its state-dict keys are those of pytorch-fid's
    ``pt_inception-2015-12-05`` file, so that file loads into it strictly."""
    from torchvision.models.inception import (BasicConv2d, Inception3, InceptionAux,
                                              InceptionB, InceptionD)

    tf_a, tf_c, tf_e = _tf_blocks()
    net = Inception3(num_classes=1008, aux_logits=False, transform_input=False,
                     init_weights=False,
                     inception_blocks=[BasicConv2d, tf_a, InceptionB, tf_c, InceptionD, tf_e,
                                       InceptionAux])
    net.Mixed_7c.max_pool = True          # Mixed_7b keeps the padding-free average pool
    return net


class InceptionFeatures(torch.nn.Module):
    """InceptionV3's 2048-d pool features (the global average pool, "pool3"; the
    classifier is not used) of images in [-1, 1], as the GAN makes them, from a local
    state dict: the TF-FID network for pytorch-fid's TF-FID weights (``name`` "inception"),
    torchvision's for its ImageNet weights ("inception_tv").

    Input handling, both nets: images mapped to [0, 1], grey repeated to 3 channels,
    resized bilinearly to 299x299; then TF-FID scales to [-1, 1] (as TF's graph expects),
    torchvision normalises with the ImageNet mean and std.
    """

    def __init__(self, weights_path):
        super().__init__()
        state = _load_state(weights_path)
        self.source = _source_of(state, weights_path)
        self.name = INCEPTION_NAMES[self.source]
        if self.source == "tf_fid":
            net = tf_fid_inception_v3()
            # 2x - 1 on [0, 1] images: written as a mean / std so both nets share a forward
            mean, std = [0.5] * 3, [0.5] * 3
        else:
            from torchvision.models import inception_v3

            net = inception_v3(weights=None, aux_logits=True, init_weights=False)
            mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        net.load_state_dict(state)          # strict: a wrong layout fails here, not silently
        net.fc = torch.nn.Identity()        # eval-mode output is then the pool3 features
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x):
        """Images (N, 1 or 3, H, W) in [-1, 1] -> features (N, 2048)."""
        x = (x + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)

    features = forward
