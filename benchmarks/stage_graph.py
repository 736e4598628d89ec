"""Wall time of a sweep with its stages in series vs as a graph, same machine, same run.

A shortened copy of ``sweeps/benchmark_demo.yaml`` (one noise ratio, one seed, ``--smoke``
data and epochs unless ``--full``; ``--stages`` keeps some of its stages) runs twice on one
local Ray with ``--cpus`` CPUs, through the same runner: ``run_sweep(series=True)`` (one
stage at a time, in file order, as raydiff ran before) and ``run_sweep()`` (a stage starts
once the stages it reads have ended). Each side gets its own MLflow store and storage
path; Ray starts once, outside the timings. ``--repeats`` alternates the sides. It also
replays the series side's trial durations in the scheduling simulation
(stage_schedule_sim.py) on ``--cpus`` slots, to set the simulated ratio beside the
measured one.

    python benchmarks/stage_graph.py [--smoke] [--cpus 2] [--repeats 1]
        [--stages dynamics,crossval,confident_learning] [--set key=value ...] [--full]
"""

import copy
import os
import sys
import tempfile
import time

import _common
import stage_schedule_sim as sim


def shortened(path, stages, sets, full):
    from raydiff.tune import sweep as sweeps

    raw = sweeps.load(path, overrides=sets, smoke=not full).raw
    raw = copy.deepcopy(raw)
    if stages:
        missing = set(stages) - set(raw["stages"])
        if missing:
            raise SystemExit(f"--stages: no stage {sorted(missing)} in {path}; "
                             f"stages: {sorted(raw['stages'])}")
        raw["stages"] = {k: v for k, v in raw["stages"].items() if k in stages}
    return sweeps.validate(raw, source=f"{path} (shortened)")


def timed(sweep, work, series):
    from raydiff import tracking
    from raydiff.tune.runner import run_sweep

    uri = f"sqlite:///{work}/mlflow.db"
    tracking.Tracker(uri)                    # the store's creation is not the stages' time
    start = time.perf_counter()
    result = run_sweep(copy.deepcopy(sweep), tracking_uri=uri, storage_path=f"{work}/ray_results",
                       dashboard=False, verbose=0, series=series)
    wall = time.perf_counter() - start
    bad = [n for n, s in result["stages"].items() if s["state"] != "finished"]
    if bad:
        raise SystemExit(f"stages did not finish ({'series' if series else 'graph'}): {bad}")
    return wall, uri, result["session"]


def main():
    p = _common.parser(__doc__)
    p.add_argument("--sweep", default=str(_common.REPO / "sweeps" / "benchmark_demo.yaml"))
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--stages", help="comma-separated stages to keep (default: all; "
                                    "--smoke: small_loss,crossval,confident_learning)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--full", action="store_true", help="the sweep's own data and epochs, not --smoke's")
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sets = ["noise_ratio=0.2", "seed=0", *args.set]
    stages = args.stages.split(",") if args.stages else None
    if args.smoke:
        stages = stages or ["small_loss", "crossval", "confident_learning"]
        sets += ["subset_size=200", "crossval.folds=2", "crossval.fold={grid: [0, 1]}"]
    sweep = shortened(args.sweep, stages, sets, args.full)
    _common.header(f"stage graph: {sweep.name} shortened, series vs graph on {args.cpus} CPUs",
                   args)
    from raydiff.tune import sweep as sweeps

    counts = sweeps.planned_counts(sweep)
    print(f"   {args.sweep} {' '.join(sets)}{'' if args.full else ' --smoke'}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    walls = {"series": [], "graph": []}
    try:
        with tempfile.TemporaryDirectory(prefix="stage-graph-") as tmp:
            for i in range(args.repeats):
                for side in ("series", "graph"):
                    work = f"{tmp}/{side}-{i}"
                    os.makedirs(work)
                    wall, uri, session = timed(sweep, work, side == "series")
                    walls[side].append(wall)
                    print(f"   {side}: {wall:.1f} s", flush=True)
                    if side == "series" and i == 0:
                        durations = sim.session_durations(sweep.name, uri, session,
                                                          [s.name for s in sweep.stages])
    finally:
        ray.shutdown()
    measured = _common.ratio(walls["series"], walls["graph"])
    simulated_series, _ = sim.simulate(sweep.after, durations, args.cpus, series=True)
    simulated_graph, _ = sim.simulate(sweep.after, durations, args.cpus, series=False)
    print(f"   series {_common.seconds(walls['series'])}; graph {_common.seconds(walls['graph'])}")
    print(f"   simulated on {args.cpus} slots from the series run's trial durations: "
          f"{simulated_series / simulated_graph:.2f}x (trial-only; Ray's per-stage start is not in it)")
    print(f"summary: graph over series wall time: {measured[0]:.2f}x (median {measured[1]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
