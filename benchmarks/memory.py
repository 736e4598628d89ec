"""Peak memory of a trial, and one copy of a shared dataset for N concurrent trials.

1. Peak RSS of an identify trial (SimpleNN on ``--subset`` mnist5k samples, the demo's
   stage 1), run in a fresh process as a Ray worker runs it: the resident memory after the
   imports and the dataset, and the peak during the trial itself (Linux's VmHWM, restarted
   after loading): the difference is what the trial adds (its float copy of the subset,
   the model, the monitor's snapshots).
2. A ``--mib`` MiB dataset put once in Ray's object store, the way the runner hands every
   trial its dataset (``tune.with_parameters``), read by ``--trials`` concurrent tasks:
   the object store holds it once (not N times), and each task's private memory (USS)
   grows by far less than the dataset, since the arrays are mapped, not copied.

    python benchmarks/memory.py [--smoke] [--subset 5000] [--mib 200] [--trials 4]
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

import _common

TRIAL = r"""
import json, sys, tempfile, torch
torch.set_num_threads(1)
from raydiff.data import load_dataset
from raydiff.experiments import get_experiment
from raydiff.experiments.base import Report
from raydiff.experiments.config import build_config

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key + ":"))

subset, epochs = int(sys.argv[1]), int(sys.argv[2])
module = get_experiment("identify")
config = build_config(module.Config, {"subset_size": subset, "epochs": epochs,
                                      "inversion_start": 5, "max_retries": 0})
data = load_dataset("mnist5k")
before, load_peak = status("VmRSS"), status("VmHWM")
with open("/proc/self/clear_refs", "w") as f:    # restart the peak (VmHWM) from here
    f.write("5")
module.run(config, Report(tempfile.mkdtemp()), data)
print(json.dumps({"before": before, "load_peak": load_peak, "peak": status("VmHWM")}))
"""


def trial_rss(subset, epochs):
    """MiB: resident after imports + dataset, the peak while loading, the peak in the trial."""
    env = {**os.environ, "PYTHONPATH": str(_common.REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", TRIAL, str(subset), str(epochs)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def plasma_mib():
    """MiB in use in the local object store (Ray's own memory summary)."""
    import ray
    from ray._private.internal_api import memory_summary

    # this session's address: other Ray instances may run on the same machine
    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    found = re.search(r"Plasma memory usage (\d+) MiB", text)
    return float(found.group(1)) if found else 0.0


def rss_kib():
    """This process's resident memory by kind (Linux): private anonymous pages vs shared
    memory (the object store's mapped objects)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssShmem"):
                fields[key] = int(value.split()[0])
    return fields


def shared_dataset(mib, trials, hold_s):
    import numpy as np
    import ray

    from raydiff.data import Dataset

    n = mib * 2**20 // 784
    ds = Dataset("synthetic", np.ones((n, 1, 28, 28), dtype=np.uint8),
                 np.zeros(n, dtype=np.int64), 10, np.array(["train"] * n))

    @ray.remote(num_cpus=0)
    def trial(data, hold):
        before = rss_kib()
        total = int(data.x.sum(dtype=np.int64))        # read every page of the dataset
        after = rss_kib()
        time.sleep(hold)
        return ({k: (after[k] - before[k]) / 1024 for k in after}, total, os.getpid())

    ray.init(num_cpus=trials, include_dashboard=False, log_to_driver=False)
    try:
        empty = plasma_mib()
        ref = ray.put(ds)                              # what tune.with_parameters does
        del ds
        pending = [trial.remote(ref, hold_s) for _ in range(trials)]
        time.sleep(hold_s / 2)
        during = plasma_mib()
        results = ray.get(pending)
    finally:
        ray.shutdown()
    return {"store_mib": during - empty, "growth": [r[0] for r in results],
            "pids": len({r[2] for r in results})}


def main():
    p = _common.parser(__doc__)
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--mib", type=int, default=200)
    p.add_argument("--trials", type=int, default=4)
    args = p.parse_args()
    if args.smoke:
        args.subset, args.epochs, args.mib, args.trials = 300, 12, 20, 2
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _common.header("memory: peak RSS of a trial, one stored copy of a shared dataset", args)
    rss = trial_rss(args.subset, args.epochs)
    peak, base = rss["peak"], rss["before"]
    print(f"-- identify trial, SimpleNN on {args.subset} mnist5k samples, {args.epochs} epochs, "
          f"plain process")
    print(f"   resident after imports + dataset {base:.0f} MiB (peak while loading "
          f"{rss['load_peak']:.0f} MiB); peak during the trial {rss['peak']:.0f} MiB: the "
          f"trial adds {rss['peak'] - base:.0f} MiB")
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        shared = shared_dataset(args.mib, args.trials, hold_s=4.0 if not args.smoke else 2.0)
    store = shared["store_mib"]
    print(f"-- a {args.mib} MiB dataset shared by {args.trials} concurrent tasks "
          f"({shared['pids']} worker processes) through the object store")
    print(f"   object store in use: {store:.0f} MiB (one copy; {args.trials} copies would be "
          f"{args.trials * args.mib} MiB)")
    print("   each task's resident memory after reading all of it, MiB private (anon) / "
          "shared (object store): " + ", ".join(f"+{g['RssAnon']:.0f} / +{g['RssShmem']:.0f}"
                                                 for g in shared["growth"]))
    once = store < 1.5 * args.mib
    print(f"summary: trial peak RSS {peak:.0f} MiB ({peak - base:.0f} MiB over imports + data); "
          f"shared dataset stored {'once' if once else 'MORE THAN ONCE'}: {store:.0f} MiB for "
          f"{args.trials} trials vs {args.trials * args.mib} MiB as copies")
    return 0 if once else 1


if __name__ == "__main__":
    sys.exit(main())
