"""SimpleNNs trained per device-hour: one pack of K models against trials sharing the device.

The same workload on both sides: a SimpleNN 784-20-20-10 trained full-batch for
``--epochs`` epochs on N x 784 inputs (synthetic, 10 random classes; 60,000 rows on CUDA,
as full MNIST). Nothing here needs Ray or MLflow.

- per trial: what fractional GPUs do (``resources: {gpu: 1/P}``). P processes share the
  device (``--procs``, default 4 and 8: ``gpu: 0.25`` and ``0.125``). Each process
  prepares its data on the device, waits for a common start signal, then trains
  ``--per-proc`` models one after another with the single-model engine
  (``raydiff.engine.train``). The rate counts all P x per-proc models over the time from
  the start signal to the last process's end, so process start-up and CUDA contexts are
  left out, as in workers Ray reuses.
- packed: one process trains packs of K models (``--ks``, default 1024 and 4096 on CUDA)
  with ``raydiff.engine.packed.train_packed`` after one warm-up pack, and counts K models
  over the pack's time. A pack that does not fit in memory is reported, not fatal.

It prints models per hour on each side and the ratio of the best pack to the best
per-trial setting. The issue's target on a GPU is >= 50x. On CPU (``--device cpu``, the
default without CUDA; small sizes) the figures only show that the script runs.

    python benchmarks/models_per_hour.py [--smoke] [--device cuda|cpu] [--samples 60000]
        [--epochs 20] [--procs 4 8] [--per-proc 8] [--ks 1024 4096]
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import _common
import torch

HIDDEN = (20, 20)
LR = 0.1

# one trial process: data on the device, the start signal, then its models in turn
TRIAL = r"""
import json, os, sys, time, torch
sys.path.insert(0, {repo!r})
from raydiff.engine import train
from raydiff.models import get_model
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
device = spec["device"]
gen = torch.Generator().manual_seed(spec["seed"])
x = torch.randn(spec["samples"], 784, generator=gen).to(device)
y = torch.randint(0, 10, (spec["samples"],), generator=gen).to(device)
warm = get_model("simple_nn", input_shape=(784,), num_classes=10, seed=0).to(device)
train(warm, x, y, epochs=2, lr={lr})
if device == "cuda":
    torch.cuda.synchronize()
open(spec["ready"], "w").close()
while not os.path.exists(spec["go"]):
    time.sleep(0.001)
for m in range(spec["models"]):
    model = get_model("simple_nn", input_shape=(784,), num_classes=10,
                      seed=spec["seed"] * 1000 + m).to(device)
    train(model, x, y, epochs=spec["epochs"], lr={lr})
if device == "cuda":
    torch.cuda.synchronize()
print(json.dumps({{"end": time.time()}}))
"""


def per_trial(procs, *, per_proc, samples, epochs, device, work):
    """Models per hour of ``procs`` processes sharing the device."""
    code = TRIAL.format(repo=str(_common.REPO), lr=LR)
    go = os.path.join(work, f"go-{procs}")
    running = []
    for p in range(procs):
        ready = os.path.join(work, f"ready-{procs}-{p}")
        spec = {"device": device, "seed": p, "samples": samples, "epochs": epochs,
                "models": per_proc, "ready": ready, "go": go}
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        running.append((ready, subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)],
                                                stdout=subprocess.PIPE, text=True, env=env)))
    while not all(os.path.exists(r) or proc.poll() is not None for r, proc in running):
        time.sleep(0.01)
    start = time.time()
    open(go, "w").close()
    ends = []
    for _, proc in running:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a trial process failed (exit {proc.returncode})")
        ends.append(json.loads(out.strip().splitlines()[-1])["end"])
    seconds = max(ends) - start
    return procs * per_proc / seconds * 3600, seconds


def packed(k, *, samples, epochs, device):
    """Models per hour of one pack of ``k`` models (after a warm-up pack)."""
    from raydiff.engine.packed import Pack, train_packed

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 784, generator=gen).to(device)
    y = torch.randint(0, 10, (samples,), generator=gen).to(device)
    times = []
    for rep in range(2):                              # the first is the warm-up
        pack = Pack.init(range(k), input_shape=(784,), num_classes=10, hidden=HIDDEN,
                         device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_packed(pack, x, y, epochs=epochs if rep else 2, lr=LR)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del pack
    return k / times[-1] * 3600, times[-1]


def main():
    p = _common.parser(__doc__)
    p.add_argument("--device", choices=["cuda", "cpu"], default=None)
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--procs", type=int, nargs="+", default=[4, 8])
    p.add_argument("--per-proc", type=int, default=None)
    p.add_argument("--ks", type=int, nargs="+", default=None)
    args = p.parse_args()
    _common.pin_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("   skipped, no CUDA device on this machine (nothing timed)")
        print("summary: models per hour skipped, no CUDA device")
        return
    gpu = device == "cuda"
    samples = args.samples or (60000 if gpu and not args.smoke else 2000 if not args.smoke else 300)
    epochs = args.epochs or (2 if args.smoke else 20)
    per_proc = args.per_proc or (2 if args.smoke else 8)
    ks = args.ks or ([4, 16] if args.smoke else [1024, 4096] if gpu else [16, 64])
    procs = [1, 2] if args.smoke and args.procs == [4, 8] else args.procs
    _common.header("SimpleNNs per device-hour: one pack vs trials sharing the device", args)
    if gpu:
        print(f"   device: {torch.cuda.get_device_name()}")
    print(f"   workload: SimpleNN 784-20-20-10, full batch, {epochs} epochs, {samples} x 784 "
          f"synthetic inputs, lr {LR}, on {device}")
    best_trial = 0.0
    with tempfile.TemporaryDirectory(prefix="models-per-hour-") as work:
        for n in procs:
            rate, seconds = per_trial(n, per_proc=per_proc, samples=samples, epochs=epochs,
                                      device=device, work=work)
            best_trial = max(best_trial, rate)
            print(f"   per trial, {n} processes sharing the device (gpu: {1 / n:g}), "
                  f"{per_proc} models each: {rate:,.0f} models/hour ({seconds:.1f} s)",
                  flush=True)
    best_pack = 0.0
    for k in ks:
        try:
            rate, seconds = packed(k, samples=samples, epochs=epochs, device=device)
        except torch.cuda.OutOfMemoryError:
            print(f"   packed, K={k}: does not fit in the device's memory")
            torch.cuda.empty_cache()
            continue
        best_pack = max(best_pack, rate)
        peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if gpu else ""
        print(f"   packed, K={k}: {rate:,.0f} models/hour ({seconds:.1f} s a pack{peak})",
              flush=True)
    ratio = best_pack / best_trial if best_trial else float("nan")
    print(f"summary: packed over per-trial models per hour on {device}: {ratio:.1f}x "
          f"(best pack {best_pack:,.0f}, best per-trial {best_trial:,.0f}; target on a GPU "
          f">= 50x)")


if __name__ == "__main__":
    main()
