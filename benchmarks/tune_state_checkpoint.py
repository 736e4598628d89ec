"""What saving Tune's experiment state costs the driver at 1,000 trials, by
``TUNE_GLOBAL_CHECKPOINT_S`` (raydiff's runner sets 5 s unless the environment says
otherwise; Tune's own default is "auto": at least 10 s, 19x the last save's time).

Each period in ``--periods`` runs one Tuner of ``--trials`` short trials (each reports
``--reports`` results and returns; configs the size of a raydiff trial spec) on one local
Ray with ``--cpus`` CPUs, its storage path in ``--storage`` (the folder the cluster's hosts
share: /shared on the local hosts of scripts/local_hosts.sh is
/var/tmp/raydiff-hosts/shared here). Tune's save of the experiment state (the trials'
states as JSON, plus the copy to the storage path) is timed around its own function, in
the driver, where it runs between scheduling steps. Printed per period: saves, the last
and mean save time, the driver's share of wall time spent saving, the sweep's wall time,
and what a killed driver would lose at most (the period plus a save).

    python benchmarks/tune_state_checkpoint.py [--trials 1000] [--periods 5,30,auto]
        [--cpus 2] [--storage /var/tmp/raydiff-hosts/shared] [--reports 3]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def trivial(config):
    from ray import tune
    for i in range(config["reports"]):
        tune.report({"i": i, "loss": 1.0 / (i + 1)})


def spec(i):
    """A config the size of a raydiff trial spec (stage, experiment, ~30 config keys)."""
    config = {f"key_{k}": (k * 0.1 if k % 3 else f"value-{k}") for k in range(30)}
    return {"stage": "main", "experiment": "train_classifier", "config": {**config, "seed": i},
            "params": {"seed": i, "noise_ratio": 0.2}, "upstream": {}}


def run_one(period, trials, reports, storage, timings):
    from ray import tune
    from ray.tune.execution import experiment_state

    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(period)
    saves = timings.setdefault(period, [])
    original = experiment_state._ExperimentCheckpointManager.sync_up_experiment_state

    def timed(self, save_fn, force=False, wait=False):
        started = time.perf_counter()
        before = self._last_save_time
        out = original(self, save_fn, force=force, wait=wait)
        if self._last_save_time != before:          # a save happened (not throttled)
            saves.append(time.perf_counter() - started)
        return out

    experiment_state._ExperimentCheckpointManager.sync_up_experiment_state = timed
    try:
        tuner = tune.Tuner(
            tune.with_parameters(trivial),
            param_space={"reports": reports, "trial": tune.grid_search([spec(i) for i in range(trials)])},
            tune_config=tune.TuneConfig(reuse_actors=True),
            run_config=tune.RunConfig(name=f"state-{period}", storage_path=storage,
                                      verbose=0))
        started = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - started
    finally:
        experiment_state._ExperimentCheckpointManager.sync_up_experiment_state = original
    assert len(grid) == trials and not grid.errors, grid.errors[:3]
    return wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--periods", default="5,30,auto")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--reports", type=int, default=3)
    parser.add_argument("--storage", default="/var/tmp/raydiff-hosts/shared")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    os.makedirs(args.storage, exist_ok=True)
    storage = tempfile.mkdtemp(prefix="tune-state-", dir=args.storage)
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    timings, rows = {}, []
    try:
        for period in args.periods.split(","):
            wall = run_one(period, args.trials, args.reports, storage, timings)
            saves = timings[period]
            rows.append((period, len(saves), saves[-1] if saves else 0.0,
                         sum(saves) / max(1, len(saves)), sum(saves) / wall, wall))
    finally:
        ray.shutdown()
    print(f"\nTune experiment state at {args.trials} trials ({args.reports} reports each), "
          f"storage {storage}, {args.cpus} CPUs:")
    print(f"{'period':>8} {'saves':>6} {'last save':>10} {'mean save':>10} "
          f"{'driver share':>13} {'sweep wall':>11}")
    for period, n, last, mean, share, wall in rows:
        print(f"{period:>8} {n:>6} {last * 1000:>8.0f} ms {mean * 1000:>8.0f} ms "
              f"{share * 100:>12.1f}% {wall:>9.1f} s")


if __name__ == "__main__":
    main()
