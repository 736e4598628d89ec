"""Seconds of Ray + MLflow bookkeeping per trial, for a trivial trial.

Two sweeps of the same trivial identify trial (100 mnist5k samples, 2 epochs) run through
raydiff's runner in one Ray session with 1 CPU, so trials run one after another on one
reused worker: ``--few`` trials, then ``--many``. The marginal wall time per trial,
(T_many - T_few) / (many - few), minus the mean time spent inside the experiment's
``run`` (the ``trial_seconds`` each trial logs) is the bookkeeping per trial: Tune's
scheduling and result handling, opening, logging to and closing the MLflow run. Fixed
costs (starting Ray, the first worker, creating the MLflow experiment) are printed apart.

The MLflow share is timed on its own in this process: the same tracker calls a trial
makes (find-or-create the run with its params and tags, metrics, the per-sample table as
an artifact, tags, close), against the same SQLite store.

    python benchmarks/overhead.py [--smoke] [--few 2] [--many 12]
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common


def sweep_raw(name, n):
    # one config per trial (pack: 1): the cost measured is a trial's; a trivial training
    # with no smoothing and the final model's judgement, so nothing waits on an inversion
    return {"name": name, "experiment": "identify", "resources": {"cpu": 1}, "pack": 1,
            "config": {"dataset": "mnist5k", "subset_size": 100, "epochs": 2,
                       "inversion_start": 0, "check_every": 1, "inversion_smoothing": 1,
                       "judge_by_final_model": True, "max_retries": 0,
                       "seed": {"grid": list(range(n))}}}


def run_once(name, n, tracker):
    from raydiff.tune import sweep as sweeps
    from raydiff.tune.runner import run_sweep

    sweep = sweeps.validate(sweep_raw(name, n), source=name)
    start = time.perf_counter()
    result = run_sweep(sweep, tracking_uri=tracker.uri, storage_path="ray_results",
                       dashboard=False, verbose=0)
    wall = time.perf_counter() - start
    runs = tracker.runs(name)
    inside = [r.data.metrics["trial_seconds"] for r in runs]
    finished = result["stages"][sweep.stages[0].name]["finished"]
    if finished != n or len(inside) != n:
        raise RuntimeError(f"{name}: {finished} of {n} trials finished")
    return wall, inside


def mlflow_share(tracker, n, folder):
    """Seconds per trial of the tracker calls a trial makes, timed in this process."""
    import numpy as np

    from raydiff import tracking
    from raydiff.experiments.base import per_sample_table

    table = per_sample_table(sample_id=np.arange(100), label=np.zeros(100),
                             observed_label=np.zeros(100), is_noisy=np.zeros(100, bool),
                             noise_kind="uniform", split="train", hard=np.zeros(100, bool),
                             score=np.zeros(100))
    path = Path(folder) / "per_sample.parquet"
    table.to_parquet(path)
    exp = tracker.experiment_id("overhead-mlflow")
    params = {f"key{i}": i for i in range(20)}
    times = []
    for i in range(n):
        start = time.perf_counter()
        run_id, _ = tracker.trial_run(exp, stage="main", trial_id=f"t{i}", run_name=f"t{i}",
                                      params=params,
                                      tags={tracking.TAG_SESSION: "s", tracking.TAG_SWEEP: "x"})
        tracker.log_metrics(run_id, [("loss", 0.5, e, int(time.time() * 1000)) for e in range(2)])
        tracker.log_artifact(run_id, path)
        tracker.set_tags(run_id, {"raydiff.device": "cpu"})
        tracker.end(run_id)
        times.append(time.perf_counter() - start)
    return times


def main():
    p = _common.parser(__doc__)
    p.add_argument("--few", type=int, default=2)
    p.add_argument("--many", type=int, default=12)
    args = p.parse_args()
    if args.smoke:
        args.few, args.many = 1, 2
    _common.pin_threads(args.threads)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _common.header("Ray + MLflow bookkeeping per trivial trial", args)
    import ray

    from raydiff import tracking

    with tempfile.TemporaryDirectory(prefix="raydiff-overhead-") as work:
        os.chdir(work)
        tracker = tracking.Tracker(f"sqlite:///{work}/mlflow.db")
        start = time.perf_counter()
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        try:
            few_wall, few_inside = run_once("overhead-few", args.few, tracker)
            many_wall, many_inside = run_once("overhead-many", args.many, tracker)
        finally:
            ray.shutdown()
        inside = statistics.mean(few_inside + many_inside)
        marginal = (many_wall - few_wall) / (args.many - args.few)
        ml = mlflow_share(tracker, max(args.many, 3), work)
    print(f"   ray.init: {ray_start:.1f} s; sweep of {args.few}: {few_wall:.1f} s, "
          f"sweep of {args.many}: {many_wall:.1f} s (1 CPU: one trial at a time, reused worker)")
    print(f"   first sweep's fixed cost (datasets, Tune start, first worker, MLflow experiment): "
          f"{few_wall - args.few * marginal:.1f} s")
    print(f"   per trial: {marginal:.2f} s wall, of which {inside:.3f} s inside the experiment")
    print(f"   MLflow calls of one trial, timed alone: {statistics.median(ml):.2f} s (median of {len(ml)})")
    print(f"summary: bookkeeping {marginal - inside:.2f} s per trial "
          f"(MLflow ~{statistics.median(ml):.2f} s, Ray/Tune the rest)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
