"""The VoG toy network: Linear(2, 10) -> Linear(10, 2), no non-linearity in between.

Being linear, it has a straight decision boundary whose coefficients follow from the
weights (:meth:`LinearToy.boundary`), so the perpendicular distance of a point to the
learned boundary is computed, not read off a plot. Weights start N(0, init_std^2) and
biases at 0, as in the original toy study.
"""

import math

import torch
from torch import nn


class LinearToy(nn.Module):
    def __init__(self, in_features=2, num_classes=2, hidden=10, init_std=1.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        for layer in (self.fc1, self.fc2):
            nn.init.normal_(layer.weight, 0.0, init_std)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        return self.fc2(self.fc1(x.flatten(1)))

    @torch.no_grad()
    def boundary(self):
        """``(w, c)`` of the decision function ``logit_1 - logit_0 = x @ w + c`` (two
        classes): the boundary is ``x @ w + c = 0``, a point's perpendicular distance to it
        ``|x @ w + c| / ||w||``. Returns numpy arrays w (D,) and float c."""
        if self.fc2.out_features != 2:
            raise ValueError(f"the boundary is defined for 2 classes, the model has "
                             f"{self.fc2.out_features}")
        diff = self.fc2.weight[1] - self.fc2.weight[0]                  # (hidden,)
        w = diff @ self.fc1.weight                                       # (D,)
        c = diff @ self.fc1.bias + self.fc2.bias[1] - self.fc2.bias[0]
        return w.double().cpu().numpy(), float(c)


def toy_linear(input_shape, num_classes, hidden=(10,), init_std=1.0, **_):
    return LinearToy(math.prod(input_shape), num_classes, hidden=int(hidden[0]),
                     init_std=init_std)
