"""Network constructors by name.

``get_model(name, input_shape=..., num_classes=..., seed=...)`` builds a network whose
initial weights depend on ``seed`` alone: construction runs under a forked, explicitly
seeded torch RNG, so no global random state leaks in or out.
"""

import math

import torch
from torch import nn

from raydiff.models.resnet import resnet18
from raydiff.models.toy import LinearToy, toy_linear
from raydiff.models.wrn import wide_resnet


class SimpleNN(nn.Module):
    """The benchmark MLP: Linear(D, 20) -> tanh -> Linear(20, 20) -> tanh -> Linear(20, C).

    ``hidden`` gives the widths of the tanh layers; ``hidden=(20,)`` is Ciceri's one-layer
    network. :meth:`features` returns the first hidden layer after tanh (the layer whose
    class manifolds the inversion point is measured on).
    """

    def __init__(self, in_features, num_classes, hidden=(20, 20)):
        super().__init__()
        widths = [in_features, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.out = nn.Linear(widths[-1], num_classes)

    def features(self, x):
        return torch.tanh(self.hidden[0](x.flatten(1)))

    def features_and_logits(self, x):
        """(first hidden layer after tanh, logits) from one forward pass."""
        z = h = self.features(x)
        for layer in self.hidden[1:]:
            h = torch.tanh(layer(h))
        return z, self.out(h)

    def forward(self, x):
        return self.features_and_logits(x)[1]


class SmallCNN(nn.Module):
    """A small CNN for 28x28 / 32x32 images: two conv-BN-ReLU-pool blocks and a linear head."""

    def __init__(self, in_channels, num_classes, width=32, image_size=28):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * width * (image_size // 4) ** 2, num_classes)

    def features(self, x):
        return self.body(x).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


class LeNet(nn.Module):
    """H-CAT's MNIST network: Conv(C -> 20, 5x5) ReLU MaxPool 2 -> Conv(20 -> 50, 5x5) ReLU
    MaxPool 2 -> Linear(-> 500) ReLU -> Dropout(p) -> Linear(500 -> classes).

    The dropout before the head is what Monte-Carlo dropout samples; :meth:`features` is
    the 500-d penultimate embedding (after ReLU, before dropout).
    """

    def __init__(self, in_channels, num_classes, image_size=(28, 28), dropout=0.2):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2))
        h, w = (((s - 4) // 2 - 4) // 2 for s in image_size)
        self.fc = nn.Linear(50 * h * w, 500)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(500, num_classes)

    def features(self, x):
        return torch.relu(self.fc(self.body(x).flatten(1)))

    def classify(self, z):
        """The logits of embeddings ``z``: everything of the forward pass after
        :meth:`features`, the dropout included."""
        return self.head(self.drop(z))

    def forward(self, x):
        return self.classify(self.features(x))


def _lenet(input_shape, num_classes, dropout=0.2, **_):
    if len(input_shape) != 3 or min(input_shape[1:]) < 16:
        raise ValueError(f"lenet needs image inputs (C, H, W) of at least 16 x 16 pixels "
                         f"(two 5x5 convolutions and two 2x2 pools), got shape {input_shape}")
    return LeNet(input_shape[0], num_classes, image_size=input_shape[1:], dropout=dropout)


def _simple_nn(input_shape, num_classes, hidden=(20, 20), **_):
    return SimpleNN(math.prod(input_shape), num_classes, hidden=tuple(hidden))


def _small_cnn(input_shape, num_classes, width=32, **_):
    if len(input_shape) != 3:
        raise ValueError(f"small_cnn needs image inputs (C, H, W), got shape {input_shape}")
    return SmallCNN(input_shape[0], num_classes, width=width, image_size=input_shape[-1])


MODELS = {
    "simple_nn": _simple_nn,
    "small_cnn": _small_cnn,
    "lenet": _lenet,
    "wrn28_10": wide_resnet,
    "resnet18": resnet18,
    "toy_linear": toy_linear,
}


def get_model(name, *, input_shape, num_classes, seed, **options):
    """Build model ``name`` with weights initialised from ``seed``; ValueError lists valid names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {sorted(MODELS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return MODELS[name](tuple(input_shape), num_classes, **options)


__all__ = ["MODELS", "LeNet", "LinearToy", "SimpleNN", "SmallCNN", "get_model"]
