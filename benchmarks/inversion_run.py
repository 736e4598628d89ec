"""Time of one inversion run (SimpleNN, full-batch, 500 epochs on mnist5k) against plain
training of the same model for the same epochs, in one process (no Ray, no MLflow).

Wall and CPU seconds are both printed: on a shared machine the CPU time (one thread) is the
steadier of the two. The ratio is the cost of watching: the radii and centroid distances of every class after
every epoch past 20, the per-sample correctness behind the learned epoch, the snapshots.

    python benchmarks/inversion_run.py [--epochs 500] [--subset 5000] [--threads 1] [--smoke]
"""

import argparse
import tempfile
import time

import torch

from raydiff.data import INIT_STREAM, derived_seed, load_dataset, prepare
from raydiff.engine import train
from raydiff.experiments import inversion
from raydiff.experiments.base import Report
from raydiff.experiments.config import build_config
from raydiff.models import get_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="300 samples, 40 epochs")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.subset = 40, 300
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist5k")
    config = build_config(inversion.Config, {"subset_size": args.subset, "epochs": args.epochs,
                                             "max_retries": 0,
                                             **({"inversion_start": 5} if args.smoke else {})})

    tensors = prepare(data, subset_size=config.subset_size, subset_seed=config.subset_seed)
    model = get_model(config.model, input_shape=tensors.x.shape[1:], num_classes=10,
                      hidden=config.hidden_layers(),
                      seed=derived_seed(config.seed, INIT_STREAM, 0))
    start, cpu = time.perf_counter(), time.process_time()
    train(model, tensors.x, tensors.y, epochs=config.epochs, lr=config.lr)
    plain, plain_cpu = time.perf_counter() - start, time.process_time() - cpu

    with tempfile.TemporaryDirectory() as folder:
        start, cpu = time.perf_counter(), time.process_time()
        metrics = inversion.run(config, Report(folder), data)
        watched, watched_cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"plain training, {args.epochs} epochs, {args.subset} samples: "
          f"{plain:.1f} s wall, {plain_cpu:.1f} s CPU")
    print(f"inversion run (watching, artifacts): {watched:.1f} s wall, {watched_cpu:.1f} s CPU "
          f"(x{watched / plain:.2f} wall, x{watched_cpu / plain_cpu:.2f} CPU of plain training)")
    print(f"summary: one inversion run costs x{watched_cpu / plain_cpu:.2f} the CPU time of "
          f"plain training ({watched_cpu:.1f} s vs {plain_cpu:.1f} s)")
    print(f"inversion epoch mean {metrics['inversion_epoch_mean']:.1f}, "
          f"stragglers {metrics['n_stragglers']}, "
          f"train error at inversion {metrics['train_error_at_inversion']:.4f}")


if __name__ == "__main__":
    main()
