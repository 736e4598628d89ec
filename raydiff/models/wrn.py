"""Wide ResNet (Zagoruyko & Komodakis 2016) for 32x32 images, without dropout.

WRN-d-k: three groups of (d - 4) / 6 pre-activation basic blocks of widths 16k, 32k, 64k
(strides 1, 2, 2) after a 3x3 stem of 16 channels, then BN-ReLU, global average pooling
and a linear head. WRN-28-10 (36.5M parameters) is the CIFAR-100 network of the data
parameters experiments.
"""

from torch import nn
import torch.nn.functional as F


class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        # a projection only where the shape changes; the identity path stays pre-activation
        self.shortcut = (None if c_in == c_out and stride == 1
                         else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class WideResNet(nn.Module):
    def __init__(self, in_channels, num_classes, depth=28, widen=10):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks = []
        for g, stride in enumerate((1, 2, 2)):
            for b in range(n):
                blocks.append(_Block(widths[g] if b == 0 else widths[g + 1], widths[g + 1],
                                     stride if b == 0 else 1))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[-1])
        self.head = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def features(self, x):
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def wide_resnet(input_shape, num_classes, depth=28, widen=10, **_):
    if len(input_shape) != 3:
        raise ValueError(f"wrn needs image inputs (C, H, W), got shape {input_shape}")
    return WideResNet(input_shape[0], num_classes, depth=depth, widen=widen)
