"""Trials per minute of the demo imbalance grid: raydiff on Ray vs one sequential process.

The sweep (``sweeps/demo.yaml`` by default: identify for 3 strategies x 2 noise levels,
then imbalance for 2 train ratios x 3 remaining ratios after each) runs

(a) through raydiff's runner on a local Ray with ``--cpus`` CPUs (1 CPU and 1 torch thread
    per trial, so ``--cpus`` trials at a time, every trial logged to MLflow), and
(b) sequentially in one plain Python process, the seed projects' way: the same experiment
    functions, trial after trial, each stage's output read back from a folder, torch using
    ``--seq-threads`` threads (default all ``--cpus``, torch's default).

Both print trials per minute; the ratio is (a) over (b). Stage reuse: the identification
is computed once per strategy x noise x seed and every imbalance cell reads it back; a
seed-style grid recomputes it in every cell. Its saving is timed from (b)'s own trials:
(identify seconds per cell x cells + imbalance seconds) / (what (b) ran).

    python benchmarks/grid_throughput.py [--smoke] [--sweep sweeps/demo.yaml] [--cpus 2]
                                         [--set identify.epochs=100 ...]
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common


def load_sweep(path, overrides, smoke):
    from raydiff.tune import sweep as sweeps

    return sweeps.load(path, overrides=overrides, smoke=smoke)


def on_ray(sweep, cpus, work):
    import ray

    from raydiff import tracking
    from raydiff.tune.runner import run_sweep

    tracker = tracking.Tracker(f"sqlite:///{work}/mlflow.db")
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(sweep, tracking_uri=tracker.uri, storage_path=f"{work}/ray_results",
                           dashboard=False, verbose=0)
    finally:
        ray.shutdown()
    wall = time.perf_counter() - start
    done = sum(s["finished"] for s in result["stages"].values())
    failed = sum(s["failed"] for s in result["stages"].values())
    return wall, done, failed


def main():
    p = _common.parser(__doc__)
    p.add_argument("--sweep", default=str(_common.REPO / "sweeps" / "demo.yaml"))
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--seq-threads", type=int, default=None,
                   help="torch threads of the sequential run (default: --cpus, torch's own "
                        "default on a machine with that many cores)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep key, as `raydiff run --set` (e.g. imbalance.epochs=50)")
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    seq_threads = args.seq_threads or args.cpus
    sweep = load_sweep(args.sweep, args.set, args.smoke)
    if args.smoke:       # a smaller grid, too: one strategy, one remaining ratio
        sweep = load_sweep(args.sweep, args.set + [
            "subset_size=200", "identify.strategy=stragglers", "identify.noise_ratio=0.2",
            "imbalance.remaining_train_ratio=0.5"], True)
    _common.header(f"grid throughput: {sweep.name} on Ray vs sequential in one process", args)
    from raydiff.tune import sweep as sweeps

    counts = sweeps.planned_counts(sweep)
    n_trials = sum(counts.values())
    print(f"   sweep {args.sweep} {' '.join(args.set)}: "
          + ", ".join(f"{k} {v} trials" for k, v in counts.items()))
    with tempfile.TemporaryDirectory(prefix="raydiff-grid-") as work:
        os.chdir(work)
        start = time.perf_counter()
        per_stage = _common.run_stages(sweep, f"{work}/sequential", threads=seq_threads)[1]
        seq_wall = time.perf_counter() - start
        ray_wall, done, failed = on_ray(sweep, args.cpus, work)
    seq_rate, ray_rate = 60 * n_trials / seq_wall, 60 * done / ray_wall
    print(f"-- sequential, one process, {seq_threads} torch threads: {n_trials} trials in "
          f"{seq_wall:.1f} s = {seq_rate:.1f} trials/min")
    for stage, secs in per_stage.items():
        print(f"   {stage}: {len(secs)} trials, mean {statistics.mean(secs):.2f} s")
    print(f"-- raydiff on Ray, {args.cpus} CPUs ({args.cpus} trials at a time), MLflow "
          f"tracking, Ray start included: {done} trials ({failed} failed) in {ray_wall:.1f} s "
          f"= {ray_rate:.1f} trials/min")
    first, *later = [s.name for s in sweep.stages]
    reuse = ""
    if later:
        later_cells = sum(len(per_stage[s]) for s in later)
        per_identify = statistics.mean(per_stage[first])
        recompute = seq_wall + per_identify * (later_cells - len(per_stage[first]))
        reuse = (f"; stage reuse: {first} computed {len(per_stage[first])} times instead of "
                 f"once per cell ({later_cells}), {recompute / seq_wall:.2f}x less work "
                 f"({recompute:.0f} s -> {seq_wall:.0f} s sequential)")
        print("  " + reuse[1:])
    print(f"summary: Ray {ray_rate:.1f} vs sequential {seq_rate:.1f} trials/min = "
          f"{ray_rate / seq_rate:.2f}x on {args.cpus} CPUs{reuse}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
