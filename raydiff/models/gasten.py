"""The GASTeN networks for 28x28 single-channel images in [-1, 1].

- :class:`BinaryCNN`: the binary classifier under stress (one sigmoid output, positive
  class -> 1): Conv(1->nf) -> MaxPool -> Conv(nf->2nf) -> MaxPool -> Flatten -> Linear -> Sigmoid,
  with no other activation, on purpose (the original's choice). ``features`` is the flatten
  layer (7*7*2nf values), the embedding FOCD and the ambiguity clustering use.
- :class:`BinaryMLP`: the MLP option, Flatten -> Linear(784, nf) -> ReLU -> Linear -> Sigmoid;
  its features are the hidden layer.
- :class:`Generator` / :class:`Discriminator`: DCGAN for 28x28 (z_dim 64 by default).
- :class:`FeatureCNN`: the FID feature network raydiff trains itself when InceptionV3
  weights are not available; ``features`` is its 128-d penultimate layer.
"""

import torch
from torch import nn


class BinaryCNN(nn.Module):
    def __init__(self, nf=4, image_size=28, in_channels=1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, nf, 3, padding=1), nn.MaxPool2d(2),
            nn.Conv2d(nf, 2 * nf, 3, padding=1), nn.MaxPool2d(2),
            nn.Flatten())
        self.head = nn.Linear(2 * nf * (image_size // 4) ** 2, 1)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        """Probability of the positive class, shape (B,)."""
        return torch.sigmoid(self.head(self.body(x))).squeeze(1)


class BinaryMLP(nn.Module):
    def __init__(self, nf=4, image_size=28, in_channels=1):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, nf),
                                  nn.ReLU())
        self.head = nn.Linear(nf, 1)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return torch.sigmoid(self.head(self.body(x))).squeeze(1)


CLASSIFIERS = {"cnn": BinaryCNN, "mlp": BinaryMLP}


def make_classifier(kind, nf, *, image_size=28, in_channels=1, seed=0):
    """Binary classifier ``kind`` (cnn or mlp) with weights from ``seed`` alone."""
    if kind not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {kind!r}; valid: {sorted(CLASSIFIERS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return CLASSIFIERS[kind](nf, image_size=image_size, in_channels=in_channels)


def _dcgan_init(module):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (B, z_dim) -> image (B, 1, 28, 28) in [-1, 1]."""

    def __init__(self, z_dim=64, width=64, channels=1):
        super().__init__()
        w = width
        self.project = nn.Sequential(nn.Linear(z_dim, 4 * w * 4 * 4, bias=False),
                                     nn.BatchNorm1d(4 * w * 4 * 4), nn.ReLU())
        self.width = w
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 5, 2, 2, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 5, 2, 2, output_padding=1, bias=False),
            nn.BatchNorm2d(w), nn.ReLU(),
            nn.ConvTranspose2d(w, channels, 5, 2, 2, output_padding=1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.up(self.project(z).view(len(z), 4 * self.width, 4, 4))


class Discriminator(nn.Module):
    """image (B, 1, 28, 28) -> probability of being real, shape (B,)."""

    def __init__(self, width=64, channels=1):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 5, 2, 2, bias=False), nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 5, 2, 2, bias=False), nn.BatchNorm2d(2 * w), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 5, 2, 2, bias=False), nn.BatchNorm2d(4 * w), nn.LeakyReLU(0.2),
            nn.Flatten())
        self.head = nn.Linear(4 * w * 4 * 4, 1)

    def forward(self, x):
        return torch.sigmoid(self.head(self.body(x))).squeeze(1)


def make_gan(*, z_dim=64, width=64, seed=0):
    """(G, D) initialised as DCGAN prescribes (conv N(0, 0.02), BN weight N(1, 0.02)) from
    ``seed`` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        G, D = Generator(z_dim, width), Discriminator(width)
        G.apply(_dcgan_init)
        D.apply(_dcgan_init)
    return G, D


class FeatureCNN(nn.Module):
    """A small classifier of every class of a dataset whose 128-d penultimate layer serves
    as the FID feature space when InceptionV3 weights are not at hand."""

    def __init__(self, num_classes, in_channels=1, image_size=28, dim=128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * (image_size // 4) ** 2, dim), nn.ReLU())
        self.head = nn.Linear(dim, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))
