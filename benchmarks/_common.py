"""Shared helpers of the benchmark scripts: the machine line, interleaved timing, ratios.

The machines these run on are shared and noisy, so every figure is a ratio of two things
timed in the same process, run alternately (A, B, A, B, ...) and summarised by the best
(least disturbed) run of each side; the median ratio is printed beside it. Single-threaded
work is timed in CPU seconds of this process as well as wall seconds: on a loaded machine
the wall clock counts the time other processes hold the core, the CPU clock does not.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:          # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))


def parser(doc, **kw):
    """An ArgumentParser with ``--smoke`` (tiny sizes: proves the script runs, times nothing
    meaningful) and ``--threads`` (torch threads in this process, default 1)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], **kw)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (for CI)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return p


def pin_threads(n):
    """Fix torch's and the BLAS/OpenMP thread pools to ``n`` (they fight on a busy CPU)."""
    import torch
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        pass


def machine():
    """One line saying where and when the figures were taken, and how busy the CPU was."""
    import torch
    try:
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    cpu = platform.processor() or platform.machine()
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {os.cpu_count()} CPUs "
            f"({cpu}) | load average {load} | torch {torch.__version__} | "
            f"python {platform.python_version()}")


def header(title, args):
    print(f"== {title}{' (smoke: sizes too small to mean anything)' if args.smoke else ''}")
    print(f"   {machine()}")


def interleaved(cases, repeats, *, warmup=True, clock="wall"):
    """Time every callable of ``cases`` (name -> fn) ``repeats`` times, round-robin.

    Returns name -> list of seconds; ``clock="both"`` returns two such dicts, wall and CPU
    (this process's, all threads). With ``warmup`` each runs once untimed first.
    """
    if warmup:
        for fn in cases.values():
            fn()
    wall = {name: [] for name in cases}
    cpu = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return (wall, cpu) if clock == "both" else wall


def best(seconds):
    return min(seconds)


def ratio(slow, fast):
    """(best-run ratio, median ratio) of two lists of seconds: how many times faster ``fast`` is."""
    return best(slow) / best(fast), statistics.median(slow) / statistics.median(fast)


def ratio_line(label, slow, fast):
    r_best, r_median = ratio(slow, fast)
    return f"{label}: {r_best:.2f}x (median {r_median:.2f}x)"


def seconds(xs):
    return f"best {best(xs):.3f} s, median {statistics.median(xs):.3f} s"


def run_stages(sweep, work, *, threads=1, device="cpu", stages=None, rows=None, verbose=False):
    """Run every trial of the validated ``sweep`` (or of its ``stages``, names) in this
    process, one after another, without Ray or MLflow: the one Ray-free runner of the
    benchmark scripts. Each trial writes into ``work/<stage>-<i>/`` (its artifacts and
    ``history.csv``); a stage ``after:`` another gets the folders of the trials the sweep's
    join pairs it with (all the folds, for confident learning).

    rows : a list, optional; one dict per trial is appended (``run_id`` = the folder name,
        stage, experiment, trial_seconds, the trial's params and config, its final metrics
        as ``m.<key>``): the runs table :class:`raydiff.report.FolderContext` reads.
    Returns ({(stage, planned id): folder}, {stage: [seconds per trial]}).
    """
    import pandas as pd
    import torch

    from raydiff.data import load_dataset
    from raydiff.experiments.base import Report, Upstream
    from raydiff.experiments.config import build_config
    from raydiff.tune import sweep as sweeps

    torch.set_num_threads(threads)
    datasets, folders, seconds = {}, {}, {}
    for stage, specs in zip(sweep.stages, sweeps.plan(sweep).values()):
        if stages is not None and stage.name not in stages:
            continue
        module = stage.module
        seconds[stage.name] = []
        for i, spec in enumerate(specs):
            config = build_config(module.Config, spec.config, f"stages.{stage.name}")
            key = (config.dataset, config.data_root, config.download, config.image_size)
            if key not in datasets and getattr(module, "NEEDS_DATA", True):
                # loaded once, like the driver does
                datasets[key] = load_dataset(config.dataset, root=config.data_root,
                                             download=config.download,
                                             image_size=config.image_size)
            upstream = {experiment: ([Upstream(f) for f in found] if isinstance(found, list)
                                     else Upstream(found))
                        for experiment, found in upstream_folders(sweep, stage, spec, folders).items()}
            run_id = f"{stage.name}-{i}"
            folder = Path(work) / run_id
            folders[(stage.name, f"planned-{i}")] = folder
            report = Report(folder, upstream=upstream, device=device)
            start = time.perf_counter()
            metrics = module.run(config, report, datasets.get(key)) or {}
            seconds[stage.name].append(time.perf_counter() - start)
            if rows is not None:
                pd.DataFrame([(s, k, v) for s, m in report.history if s is not None
                              for k, v in m.items()], columns=["step", "key", "value"]
                             ).to_csv(folder / "history.csv", index=False)
                rows.append({"run_id": run_id, "stage": stage.name, "experiment": module.NAME,
                             "trial_seconds": seconds[stage.name][-1], **spec.params,
                             **vars(config), **{f"m.{k}": v for k, v in metrics.items()}})
            if verbose:
                print(f"{run_id}: {seconds[stage.name][-1]:.1f} s", flush=True)
    return folders, seconds


def upstream_folders(sweep, stage, spec, folders):
    """{experiment: folder (or list of folders)} of the earlier-stage results ``spec`` takes,
    from the ``folders`` :func:`run_stages` returned."""
    out = {}
    for experiment, ids in spec.upstream.items():
        # plan() numbers each stage's trials; the id belongs to the earlier stage that runs
        # this experiment
        u_stage = next(s for s in stage.after if sweep.stage(s).experiment == experiment)
        found = [folders[(u_stage, i)] for i in (ids if isinstance(ids, list) else [ids])]
        out[experiment] = found if isinstance(ids, list) else found[0]
    return out
