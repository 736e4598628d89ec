"""Frechet distances between image sets, and the feature networks they are measured in.

FID compares the Gaussian statistics (mean, covariance) of two sets of features:
``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. GASTeN measures it in three spaces:

- ``fid_<net>``: features of a generic image network. The original uses InceptionV3's
  2048-d pool layer (images resized to 299, grey repeated to 3 channels); raydiff uses it
  when its weights are on this machine (a path, or torchvision's cache) and otherwise a
  small CNN it trains on the dataset itself (:class:`raydiff.models.gasten.FeatureCNN`).
  The metric is named for the network and its weights, so numbers of different extractors
  never mix: ``fid_inception_tv`` is InceptionV3 with torchvision's ImageNet weights, which
  is *not* the TF-FID Inception of the papers (``fid_inception``, pytorch-fid's
  ``pt_inception-2015-12-05`` weights with its modified blocks: not ported yet, such a
  file is refused rather than loaded into the wrong network), ``fid_smallcnn`` the CNN.
- ``focd``: the same distance in the classifier's flatten features;
- ``acd``: not a distance between sets, the mean |0.5 - C(G(z))| (lower = more ambiguous).
"""

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
    exist), else ``$RAYDIFF_INCEPTION_WEIGHTS``, else torchvision's cached download."""
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"inception_weights={path!r} is not a file; give the path of "
                                    f"torchvision's inception_v3 state dict, or leave it unset "
                                    f"to use the feature network raydiff trains")
        return Path(path)
    env = os.environ.get(INCEPTION_ENV)
    if env and Path(env).is_file():
        return Path(env)
    from torchvision.models import Inception_V3_Weights

    name = Path(Inception_V3_Weights.IMAGENET1K_V1.url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    return cached if cached.is_file() else None


# feature-net name (and so FID metric name) per InceptionV3 weights source
INCEPTION_NAMES = {"torchvision": "inception_tv", "tf_fid": "inception"}


def inception_source(weights_path):
    """"torchvision" or "tf_fid" for an InceptionV3 state dict: the TF-FID weights
    (pytorch-fid's ``pt_inception-2015-12-05``) end in a 1008-way classifier, torchvision's
    ImageNet weights in a 1000-way one."""
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    rows = state["fc.weight"].shape[0] if "fc.weight" in state else None
    if rows == 1008:
        return "tf_fid"
    if rows == 1000:
        return "torchvision"
    raise ValueError(f"{weights_path}: not an InceptionV3 state dict (fc.weight has "
                     f"{rows} rows; torchvision's has 1000, TF-FID's 1008)")


def inception_name(weights_path):
    """The feature-net name of these weights: ``inception_tv`` or ``inception`` (TF-FID)."""
    return INCEPTION_NAMES[inception_source(weights_path)]


class InceptionFeatures(torch.nn.Module):
    """InceptionV3's 2048-d pool features of images in [-1, 1] (grey -> 3 channels,
    resized to 299), from a local torchvision state dict. TF-FID weights are refused:
    their network differs (pytorch-fid's FIDInceptionA/C/E blocks), not ported here."""

    def __init__(self, weights_path):
        super().__init__()
        from torchvision.models import inception_v3

        if inception_source(weights_path) == "tf_fid":
            raise NotImplementedError(
                f"{weights_path} holds the TF-FID Inception weights; raydiff does not port "
                f"that network yet: give torchvision's inception_v3 weights (metric "
                f"fid_inception_tv) or use feature_net: smallcnn")
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        net.fc = torch.nn.Identity()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        x = (x + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)

    features = forward
