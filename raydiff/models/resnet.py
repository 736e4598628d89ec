"""ResNet-18 for ImageFolder datasets (torchvision's network, randomly initialised).

The stem takes the dataset's channel count, so grey-scale sets work too; the global
average pool makes any image size from 32x32 up valid (64x64 downsampled ImageNet
classes are the intended use).
"""

from torch import nn


def resnet18(input_shape, num_classes, **_):
    from torchvision.models import resnet18 as tv_resnet18

    if len(input_shape) != 3:
        raise ValueError(f"resnet18 needs image inputs (C, H, W), got shape {input_shape}")
    model = tv_resnet18(weights=None, num_classes=num_classes)
    if input_shape[0] != 3:
        model.conv1 = nn.Conv2d(input_shape[0], 64, 7, 2, 3, bias=False)
    return model
