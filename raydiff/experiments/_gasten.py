"""What the GASTeN stages share: the binary (pos, neg) data and loading each other's models
from artifacts (their image grids are :func:`raydiff.plots.images.image_grid`)."""

from dataclasses import dataclass

import numpy as np
import torch

from raydiff.data import prepare
from raydiff.data.splits import split_positions
from raydiff.experiments.config import Common, ConfigError, at_least, ratio
from raydiff.models.gasten import FeatureCNN, make_classifier

IMAGE_SHAPE = (1, 28, 28)


@dataclass
class GastenData(Common):
    """The binary task: images of class ``pos`` (label 1) against class ``neg`` (label 0),
    scaled to [-1, 1]. The test part is the dataset's own test split when it has one,
    else a random ``test_fraction`` of the subset, drawn with ``subset_seed`` so every
    stage of a sweep holds out the same images."""

    pos: int = at_least(7, 0)
    neg: int = at_least(1, 0)
    test_fraction: float = ratio(0.2)

    def check(self, where):
        if self.pos == self.neg:
            raise ConfigError(f"{where}: pos and neg are both {self.pos}; pick two classes")
        if self.noise_ratio:
            raise ConfigError(f"{where}: noise_ratio={self.noise_ratio}: the GASTeN stages "
                              f"train on clean labels; set noise_ratio: 0")


@dataclass
class BinaryData:
    """x: (N, 1, 28, 28) float in [-1, 1] on the device; y: (N,) float, 1 = pos;
    sample_id: (N,) index in the loaded dataset; for the train and the test part."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    train_id: np.ndarray
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_id: np.ndarray
    pos: int = 1
    neg: int = 0

    def class_of(self, y):
        """The dataset's class (``pos`` / ``neg``) of 0/1 labels ``y`` ((N,) tensor)."""
        return np.where(y.cpu().numpy() >= 0.5, self.pos, self.neg)


def _split(data, sample_id, test_fraction, seed):
    train, _, test = split_positions(data, sample_id, test_fraction=test_fraction,
                                     val_fraction=0.0, seed=seed)
    return train, test


def prepare_images(config, data, device):
    """The subset of ``data`` scaled to [-1, 1] (every class) and its (train, test)
    positions; ValueError unless the images are 1 x 28 x 28 (the DCGAN's size)."""
    tensors = prepare(data, subset_size=config.subset_size, subset_seed=config.subset_seed,
                      normalize="minus_one_one", device=device)
    if tuple(tensors.x.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"dataset {config.dataset} has images of shape {tuple(tensors.x.shape[1:])};"
                         f" the GASTeN networks take {IMAGE_SHAPE} (MNIST, FashionMNIST, KMNIST, "
                         f"mnist5k)")
    train, test = _split(data, tensors.sample_id, config.test_fraction, config.subset_seed)
    return tensors, train, test


def binary_data(config, data, device):
    """The (pos, neg) images of the configured subset, split into train and test."""
    tensors, train, test = prepare_images(config, data, device)
    for key in ("pos", "neg"):
        if not 0 <= getattr(config, key) < tensors.num_classes:
            raise ConfigError(f"{key}={getattr(config, key)} is not a class of {config.dataset} "
                              f"(0..{tensors.num_classes - 1})")
    label = tensors.label
    keep = np.isin(label, [config.pos, config.neg])
    parts = []
    for positions in (train, test):
        positions = positions[keep[positions]]
        t = torch.as_tensor(positions, device=device)
        y = torch.as_tensor(label[positions] == config.pos, dtype=torch.float32, device=device)
        parts += [tensors.x[t], y, tensors.sample_id[positions]]
    out = BinaryData(*parts)
    out.pos, out.neg = config.pos, config.neg
    if len(out.train_y) < 2 or len(out.test_y) < 1:
        raise ValueError(f"only {len(out.train_y)} training and {len(out.test_y)} test images of "
                         f"classes {config.pos}/{config.neg}; raise subset_size")
    return out


def classifier_state(model, kind, nf):
    return {"kind": kind, "nf": int(nf), "state_dict": model.state_dict()}


def load_classifier(state, device="cpu"):
    """The frozen classifier saved by :func:`classifier_state` (eval mode, no gradients
    of its own; gradients still flow through it to its input)."""
    model = make_classifier(state["kind"], state["nf"])
    model.load_state_dict(state["state_dict"])
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_feature_net(state, device="cpu"):
    """(images -> features function, name) from the ``gasten_featnet`` stage's artifact."""
    if state["name"].startswith("inception"):
        from raydiff.engine.fid import InceptionFeatures, find_inception_weights

        path = find_inception_weights(state["weights_path"])
        net = InceptionFeatures(path).to(device).eval()
        # named by the weights it loaded: an artifact written before the names told weights
        # apart says "inception" whatever they were
        state = {**state, "name": net.name}
    else:
        net = FeatureCNN(int(state["num_classes"]))
        net.load_state_dict(state["state_dict"])
        net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.features, state["name"]


@dataclass
class GanTraining(GastenData):
    """Keys of both GAN steps. ``run`` tells repeated GAN runs apart (3 in the paper's
    grid); it is also what pairs a step-2 trial with the step-1 run it continues."""

    run: int = at_least(0, 0)
    batch_size: int = at_least(64, 2)
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999


def gan_state(G, D, z_dim, width):
    """The weights a later stage loads (no optimiser state)."""
    return {"z_dim": int(z_dim), "width": int(width), "G": G.state_dict(),
            "D": D.state_dict() if D is not None else {}}


def gan_parts(G, D, opt_g, opt_d, generator):
    """The objects of a GAN run, named for :func:`raydiff.engine.state.save_state` and
    :func:`~raydiff.engine.state.restore_state` (a killed trial goes on exactly)."""
    return {"modules": {"G": G, "D": D}, "optimizers": {"G": opt_g, "D": opt_d},
            "generators": {"batch": generator}}
