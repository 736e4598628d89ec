"""Seconds per GASTeN step-2 epoch and peak GPU memory, one trial alone and K packed.

A step-2 epoch as the sweep runs it: DCGAN (z_dim 64, width 64), batch 64, one D and one
G step per batch with the confusion distance (``--alpha``, a number or mgda), then the
evaluation on 2048 test-noise vectors (FID in the small feature CNN, FOCD, ACD). Synthetic
images in [-1, 1] stand in for the ~13,000 MNIST 7/1 training images (the cost does not
depend on the pixels). ``--packed K`` runs K such trials at once in separate processes on
the same device, as fractional GPUs pack them, and reports their mean epoch time and
peak memory; the ratio to the lone trial says what packing costs per trial.

    python benchmarks/gasten_step2_epoch.py [--samples 13000] [--epochs 2] [--packed 4 8]
"""

import argparse
import multiprocessing as mp
import time

import torch


def trial(args, queue=None):
    from raydiff.engine.gan import Evaluator, adam_pair, gan_epoch, parse_alpha
    from raydiff.models.gasten import FeatureCNN, make_classifier, make_gan

    torch.set_num_threads(1)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(args.samples, 1, 28, 28, generator=gen) * 2 - 1).to(device)
    G, D = make_gan(seed=0)
    G, D = G.to(device), D.to(device)
    C = make_classifier("cnn", 4).to(device).eval().requires_grad_(False)
    feat = FeatureCNN(10).to(device).eval().requires_grad_(False)
    evaluate = Evaluator.for_real(x[:4096], test_noise=torch.randn(2048, 64, generator=gen).to(device),
                                  classifier=C, feature_fn=feat.features, feature_name="smallcnn")
    opt_g, opt_d = adam_pair(G, D)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(args.epochs):
        started = time.perf_counter()
        gan_epoch(G, D, x, opt_g=opt_g, opt_d=opt_d, batch_size=64, generator=gen, classifier=C,
                  alpha=parse_alpha(args.alpha))
        evaluate(G)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    result = (min(seconds), peak)
    if queue is not None:
        queue.put(result)
    return result


def packed(args, k):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=trial, args=(args, queue)) for _ in range(k)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return (sum(r[0] for r in results) / k, max(r[1] for r in results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=13000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--alpha", default="25")
    parser.add_argument("--packed", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    alone, peak = trial(args)
    print(f"device {args.device}, {args.samples} images, batch 64, alpha {args.alpha}")
    print(f"alone:     {alone:7.2f} s/epoch  peak {peak:8.1f} MiB")
    for k in args.packed:
        seconds, peak_k = packed(args, k)
        print(f"packed {k}:  {seconds:7.2f} s/epoch  peak {peak_k:8.1f} MiB per trial  "
              f"slowdown x{seconds / alone:.2f}, throughput x{k * alone / seconds:.2f}")


if __name__ == "__main__":
    main()
