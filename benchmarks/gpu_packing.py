"""Trials per hour and peak memory per trial with 1, 2, 4, 8, 16 trials on one GPU.

What fractional GPUs (``resources: {gpu: 0.25}``) do is run several trial processes on one
card at once. Ray and MLflow are not needed for that: this script starts N processes that
each run one trial of a sweep stage (the experiment's ``run``, as a Ray worker would) at
the same moment, and times the batch. Per workload and N it prints trials per hour and
the peak memory of a trial (PyTorch's reserved peak plus the CUDA context), then the
``gpu:`` fraction to use: 1/N for the N with the most trials per hour among those whose N
trials fit in the card's memory.

Workloads (a sweep file and a stage; earlier stages run once first, in this process):
``simple_nn`` (sweeps/demo.yaml, identify: SimpleNN full-batch on mnist5k),
``data_params`` (sweeps/data_params_demo.yaml) and ``gasten`` (a GASTeN step-2 epoch, from
sweeps/gasten_demo.yaml where it exists). Without CUDA the script says so and exits 0;
``--device cpu`` runs the same packing on CPU processes (to check the script; the figures
say nothing about GPUs).

    python benchmarks/gpu_packing.py [--smoke] [--counts 1 2 4 8 16] [--workloads simple_nn]
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import _common

# name -> (sweep file, stage, overrides)
WORKLOADS = {
    "simple_nn": ("demo.yaml", "identify", []),
    "data_params": ("data_params_demo.yaml", None, []),
    "gasten": ("gasten_demo.yaml", "gasten_step2", ["epochs=1"]),
}

TRIAL = r"""
import json, resource, sys, tempfile, time, torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
from raydiff.data import load_dataset
from raydiff.experiments import get_experiment
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import build_config
module = get_experiment(spec["experiment"])
config = build_config(module.Config, spec["config"])
data = (load_dataset(config.dataset, root=config.data_root, image_size=config.image_size)
        if getattr(module, "NEEDS_DATA", True) else None)
upstream = {k: [Upstream(f) for f in v] if isinstance(v, list) else Upstream(v)
            for k, v in spec["upstream"].items()}
cuda = spec["device"] == "cuda"
if cuda:
    torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
module.run(config, Report(tempfile.mkdtemp(), upstream=upstream, device=spec["device"]), data)
if cuda:
    torch.cuda.synchronize()
peak = (torch.cuda.max_memory_reserved() if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({"seconds": time.perf_counter() - start, "peak": peak}))
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


def prepare_trial(name, smoke, device, work):
    """The JSON spec of the workload's trial (earlier stages run here first), or None."""
    from raydiff.tune import sweep as sweeps

    file, stage_name, overrides = WORKLOADS[name]
    path = _common.REPO / "sweeps" / file
    if not path.exists():
        print(f"-- {name}: skipped, no sweeps/{file} in this checkout")
        return None
    sweep = sweeps.load(path, smoke=smoke)
    stage = next((s for s in sweep.stages if stage_name in (None, s.name, s.experiment)),
                 None)
    if stage is None:
        print(f"-- {name}: skipped, sweeps/{file} has no stage {stage_name!r}")
        return None
    if overrides:
        prefix = f"{stage.name}." if len(sweep.stages) > 1 else ""
        sweep = sweeps.load(path, smoke=smoke, overrides=[prefix + o for o in overrides])
        stage = sweep.stage(stage.name)
    earlier = [s.name for s in sweep.stages[:sweep.stages.index(stage)]]
    folders = {}
    if earlier:
        print(f"   {name}: running the earlier stages {earlier} once")
        folders, _ = _common.run_stages(sweep, work, device=device, stages=earlier)
    spec = sweeps.plan(sweep)[stage.name][0]
    upstream = _common.upstream_folders(sweep, stage, spec, folders)
    upstream = {k: [str(f) for f in v] if isinstance(v, list) else str(v)
                for k, v in upstream.items()}
    print(f"-- {name}: sweeps/{file}, stage {stage.name} ({stage.experiment}), first trial "
          f"{ {k: v for k, v in spec.config.items()} }")
    return json.dumps({"experiment": stage.experiment, "config": spec.config,
                       "upstream": upstream, "device": device})


def main():
    p = _common.parser(__doc__)
    p.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = p.parse_args()
    _common.header(f"packing concurrent trial processes on one {args.device.upper()}", args)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("summary: skipped, no CUDA device here (torch.cuda.is_available() is False); "
              "run it on a GPU machine (or pass --device cpu to exercise it on CPUs)")
        return 0
    if args.smoke:
        args.counts = [1, 2]
    gib = 2 ** 30
    if args.device == "cuda":
        context = _result(_python(CONTEXT))
        total = context["total"]
        name = torch.cuda.get_device_name(0)
        print(f"   device: {name}; CUDA context per process {context['context'] / gib:.2f} GiB "
              f"of {total / gib:.1f} GiB")
    else:
        context, name = {"context": 0}, f"{os.cpu_count()} CPUs"
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    advice = []
    with tempfile.TemporaryDirectory(prefix="raydiff-packing-") as work:
        for workload in args.workloads:
            spec = prepare_trial(workload, args.smoke, args.device, f"{work}/{workload}")
            if spec is None:
                continue
            best = None
            for count in args.counts:
                start = time.perf_counter()
                procs = [_python(TRIAL, spec) for _ in range(count)]
                results = [_result(proc) for proc in procs]
                wall = time.perf_counter() - start
                per_trial = max(r["peak"] for r in results) + context["context"]
                fits = count * per_trial < 0.95 * total
                rate = 3600 * count / wall
                print(f"   {count:3d} at once: {wall:7.1f} s, {rate:8.0f} trials/hour, peak "
                      f"{per_trial / gib:.2f} GiB per trial{'' if fits else ' (does not fit)'}")
                if fits and (best is None or rate > best[1]):
                    best = (count, rate)
            if best:
                advice.append(f"{workload}: gpu {1 / best[0]:g} ({best[0]} per card, "
                              f"{best[1]:.0f} trials/hour)")
                print(f"   use gpu: {1 / best[0]:g}")
    print(f"summary: on {name}, {time.strftime('%Y-%m-%d')}: " + ("; ".join(advice) or "nothing ran"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
