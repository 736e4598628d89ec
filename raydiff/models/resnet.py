"""ResNet-18 (torchvision's network, randomly initialised) with a stem for the image size.

Small images (up to ``CIFAR_STEM_MAX`` = 32 pixels a side: CIFAR, MNIST-like sets) get the
CIFAR stem that the noisy-label literature's ResNet-18 uses: one 3x3 stride-1 convolution
and no max-pool, so a 32x32 image reaches the residual stages at 32x32 and the last stage at 4x4. ImageNet's
7x7 stride-2 convolution + max-pool would shrink it to 8x8 before the first block and 1x1
at the end, a much weaker network on such inputs. Larger images (64x64 downsampled
ImageNet classes from an ImageFolder) keep the ImageNet stem. The stem takes the dataset's
channel count, so grey-scale sets work too; the global average pool takes any size.
"""

from torch import nn

CIFAR_STEM_MAX = 32


def resnet18(input_shape, num_classes, **_):
    from torchvision.models import resnet18 as tv_resnet18

    if len(input_shape) != 3:
        raise ValueError(f"resnet18 needs image inputs (C, H, W), got shape {input_shape}")
    channels, height, width = input_shape
    model = tv_resnet18(weights=None, num_classes=num_classes)
    if max(height, width) <= CIFAR_STEM_MAX:
        # torchvision initialises convolutions with Kaiming normal (fan_out); so does nn.init here
        model.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model
