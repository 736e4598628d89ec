"""Seconds per WRN-28-10 CIFAR-100 epoch with instance data parameters, and peak GPU memory.

Synthetic CIFAR-shaped tensors on the device (the cost does not depend on the pixels):
``--samples`` images, batch 128, crop + flip augmentation, the model's SGD and the
sparse SGD of the instance parameters, then the clean-test evaluation of 10,000 images.
The per-epoch time is scaled to 50,000 training images. Peak memory sizes ``gpu:``
fractions in sweeps (Ray does not cap a fractional trial's memory).

    python benchmarks/wrn_epoch.py [--samples 5000] [--device cuda]
"""

import argparse
import time

import torch

from raydiff.engine import crop_flip, predict, train
from raydiff.engine.data_params import DataParameters
from raydiff.models import get_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.samples, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 100, (args.samples,), generator=gen).to(device)
    test_x = torch.randn(args.test, 3, 32, 32, generator=gen).to(device)
    model = get_model("wrn28_10", input_shape=(3, 32, 32), num_classes=100, seed=0).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    dp = DataParameters(args.samples, 100, y, learn_instance=True, lr_instance=0.2)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # one warm-up batch pays for cuDNN autotuning and allocator growth
    train(model, x[:args.batch_size], y[:args.batch_size], epochs=1, optimizers=[opt],
          batch_size=args.batch_size, generator=gen, augment=crop_flip)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    train(model, x, y, epochs=1, optimizers=[opt, *dp.optimizers], loss_fn=dp.loss,
          after_step=dp.clamp_, batch_size=args.batch_size, generator=gen, augment=crop_flip)
    sync()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    predict(model, test_x, batch_size=1024)
    sync()
    eval_s = time.perf_counter() - start
    per_epoch = train_s * 50000 / args.samples + eval_s
    print(f"device {device}: {train_s:.2f} s for {args.samples} training images, "
          f"{eval_s:.2f} s for {args.test} test images -> {per_epoch:.1f} s per "
          f"50k-image epoch with evaluation")
    if device.type == "cuda":
        data_gib = (x.nelement() + test_x.nelement()) * 4 / 2**30
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, of which "
              f"{data_gib:.2f} GiB synthetic data; the experiment holds CIFAR-100 in about "
              f"1.3 GiB (all 60k images plus the training copy)")

if __name__ == "__main__":
    main()
