"""Trials per hour and peak GPU memory per trial with 1, 2, 4, 8, 16 trials on one GPU.

What fractional GPUs (``resources: {gpu: 0.25}``) do is run several trial processes on one
card at once. Ray and MLflow are not needed for that: this script starts N processes that
each run an experiment's ``run`` (the trial function) on the GPU at the same moment, and
times the batch. Per workload and N it prints trials per hour and the peak memory of a
trial (PyTorch's reserved peak plus the CUDA context), and then the ``gpu:`` fraction to
use: 1/N for the N with the most trials per hour among those whose N trials fit in the
card's memory.

Workloads: ``simple_nn`` (the demo's identify trial, SimpleNN full-batch on mnist5k),
``data_params`` (the data-parameters demo trial) and ``gasten`` (a GASTeN step-2 epoch), the
last only where the package has a ``gasten`` experiment. Without CUDA the script says so
and exits 0: the numbers need a GPU machine.

    python benchmarks/gpu_packing.py [--smoke] [--counts 1 2 4 8 16] [--workloads simple_nn]
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import _common

WORKLOADS = {
    "simple_nn": ("identify", {"dataset": "mnist5k", "subset_size": 5000, "epochs": 500},
                  {"epochs": 20}),
    "data_params": ("data_params", {"dataset": "mnist5k", "epochs": 20}, {"epochs": 2}),
    "gasten": ("gasten", {"dataset": "mnist5k", "step": 2, "epochs": 1}, {}),
}

TRIAL = r"""
import json, sys, tempfile, time, torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
from raydiff.data import load_dataset
from raydiff.experiments import get_experiment
from raydiff.experiments.base import Report
from raydiff.experiments.config import build_config
module = get_experiment(spec["experiment"])
config = build_config(module.Config, spec["config"])
data = load_dataset(config.dataset) if getattr(module, "NEEDS_DATA", True) else None
free_before, total = torch.cuda.mem_get_info()
torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
module.run(config, Report(tempfile.mkdtemp(), device="cuda"), data)
torch.cuda.synchronize()
print(json.dumps({"seconds": time.perf_counter() - start,
                  "reserved": torch.cuda.max_memory_reserved(), "total": total}))
"""

CONTEXT = r"""
import json, torch
free, total = torch.cuda.mem_get_info()
torch.zeros(1, device="cuda")
after, _ = torch.cuda.mem_get_info()
print(json.dumps({"context": free - after, "total": total}))
"""


def _python(code, *args):
    env = {**os.environ, "PYTHONPATH": str(_common.REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _result(proc):
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"trial process failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def pack(experiment, config, count):
    """Run ``count`` trials at once; (wall seconds, list of per-trial results)."""
    spec = json.dumps({"experiment": experiment, "config": config})
    start = time.perf_counter()
    procs = [_python(TRIAL, spec) for _ in range(count)]
    results = [_result(p) for p in procs]
    return time.perf_counter() - start, results


def main():
    p = _common.parser(__doc__)
    p.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = p.parse_args()
    _common.header("GPU packing: concurrent trial processes on one GPU", args)
    import torch

    if not torch.cuda.is_available():
        print("summary: skipped, no CUDA device here (torch.cuda.is_available() is False); "
              "run it on a GPU machine")
        return 0
    from raydiff.experiments import experiments

    if args.smoke:
        args.counts = [1, 2]
    print(f"   device: {torch.cuda.get_device_name(0)}")
    context = _result(_python(CONTEXT))
    gib = 2 ** 30
    print(f"   CUDA context per process: {context['context'] / gib:.2f} GiB of "
          f"{context['total'] / gib:.1f} GiB")
    for name in args.workloads:
        experiment, config, smoke = WORKLOADS[name]
        if experiment not in experiments():
            print(f"-- {name}: skipped, no {experiment!r} experiment in this package")
            continue
        config = {**config, **(smoke if args.smoke else {})}
        print(f"-- {name}: {experiment} {config}")
        best = None
        for count in args.counts:
            wall, results = pack(experiment, config, count)
            per_trial = max(r["reserved"] for r in results) + context["context"]
            fits = count * per_trial < 0.95 * context["total"]
            rate = 3600 * count / wall
            print(f"   {count:3d} at once: {wall:7.1f} s, {rate:8.0f} trials/hour, peak "
                  f"{per_trial / gib:.2f} GiB per trial{'' if fits else ' (does not fit)'}")
            if fits and (best is None or rate > best[1]):
                best = (count, rate)
        if best:
            print(f"   use gpu: {1 / best[0]:g} ({best[0]} per card, {best[1]:.0f} trials/hour)")
    print(f"summary: measured on {torch.cuda.get_device_name(0)}, {time.strftime('%Y-%m-%d')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
