"""The tracking store under a cluster's load: N trials logging at once, and what arrived.

N processes (forked from this one, so the imports are paid once) each send one trial's
traffic through ``raydiff.tracking.Tracker``, all released at the same instant: the trial's
run opened with its params and tags (``trial_run``), node tags, one batch of ``--metrics``
metrics per epoch for ``--epochs`` epochs (``--epoch-s`` apart; 0, the default, is the
burst a sweep's trials make when they start or end together), a ``--artifact-kb`` artifact,
the run ended. The stores:

- ``sqlite``: the SQLite file store used directly (a laptop's default);
- ``mlflow-server``: ``mlflow server`` on a SQLite store with ``--serve-artifacts
  --workers 4``, as cluster.yaml started it before ``raydiff server`` existed;
- ``server-postgresql`` / ``server-sqlite``: ``raydiff server --backend ...``.

Afterwards the store is read back and counted: runs FINISHED, left RUNNING, never
created; metric points missing (of N x epochs x metrics); artifacts missing; the retries
the trackers made (their "retrying in" lines); wall time from the release to the last
process done, and the slowest and median process.

    python benchmarks/tracker_load.py [--smoke] [--n 16,64,128,256] [--stores ...]
        [--raydiff FOLDER]   # the raydiff package to test (e.g. an older checkout)
        [--check]            # exit 1 when anything is lost (CI runs --smoke --check)
"""

import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STORES = ("sqlite", "mlflow-server", "server-postgresql", "server-sqlite")


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="N=16 only (for CI)")
    p.add_argument("--n", default="16,64,128,256", help="concurrent trials, comma-separated")
    p.add_argument("--stores", default="sqlite,server-postgresql,server-sqlite",
                   help=f"comma-separated, of {', '.join(STORES)}")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--metrics", type=int, default=5)
    p.add_argument("--artifact-kb", type=int, default=200)
    p.add_argument("--epoch-s", type=float, default=0.0, help="seconds between epochs")
    p.add_argument("--timeout", type=float, default=900, help="seconds per (store, N)")
    p.add_argument("--raydiff", help="folder holding the raydiff package to test "
                                     "(default: this checkout)")
    p.add_argument("--work", help="folder for the stores (default: a new temporary one)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a run, a metric point or an artifact is lost")
    args = p.parse_args(argv)
    args.n = [16] if args.smoke else [int(x) for x in args.n.split(",")]
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    bad = [s for s in args.stores if s not in STORES]
    if bad:
        p.error(f"unknown store(s) {bad}; choose from {', '.join(STORES)}")
    return args


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(uri):
    import urllib.request
    try:
        with urllib.request.urlopen(uri + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _env(pythonpath):
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(pythonpath),
            os.environ.get("PYTHONPATH")])), "PYTHONUNBUFFERED": "1"}


class Server:
    """A tracking server in its own process group, stopped by SIGTERM to the group."""

    def __init__(self, kind, folder, pythonpath):
        self.kind, self.folder, self.port = kind, Path(folder), _free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = self.folder / "launcher.log"
        if kind == "mlflow-server":
            store = f"sqlite:///{self.folder / 'mlflow.db'}"
            # the store made once before the workers start, as cluster.yaml did
            subprocess.run([sys.executable, "-c", "import sys; from raydiff.tracking import "
                            "Tracker; Tracker(sys.argv[1]).check()", store], check=True,
                           env=_env(pythonpath))
            cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                   "--port", str(self.port), "--backend-store-uri", store, "--serve-artifacts",
                   "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "4"]
        else:
            cmd = [sys.executable, "-m", "raydiff.cli", "server", "--port", str(self.port),
                   "--dir", str(self.folder), "--backend", kind.split("-", 1)[1]]
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                          env=_env(pythonpath), cwd=self.folder,
                                          start_new_session=True)
        started = time.monotonic()
        while not (_healthy(self.uri) and (kind == "mlflow-server" or
                                           "tracking URI" in self.log.read_text())):
            if self.popen.poll() is not None or time.monotonic() - started > 600:
                self.stop()
                raise RuntimeError(f"{kind} did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)
        self.start_seconds = time.monotonic() - started

    def stop(self):
        # raydiff server stops its own children (PostgreSQL included) on SIGTERM: send it
        # to the launcher alone and wait; the plain mlflow server needs its whole group
        try:
            if self.kind == "mlflow-server":
                os.killpg(self.popen.pid, signal.SIGTERM)
            else:
                self.popen.send_signal(signal.SIGTERM)
            self.popen.wait(timeout=120)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- the processes ------------------------------------------------------------------------

def _setup(uri, name, out):
    from raydiff import tracking
    out.put(tracking.Tracker(uri).experiment_id(name))


def _trial(i, uri, exp_id, name, args, folder, ready, go, results):
    log = open(folder / f"trial{i}.log", "w")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    from raydiff import tracking

    artifact = folder / f"table{i}.bin"
    artifact.write_bytes(os.urandom(args.artifact_kb * 1024))
    error, run_id, tracker = None, None, None
    try:
        tracker = tracking.Tracker(uri)
    except Exception as exc:  # noqa: BLE001
        error = f"{type(exc).__name__}: {exc}"
    ready.put(i)
    go.wait()
    start = time.monotonic()
    try:
        if error:
            raise RuntimeError(error)
        params = {"seed": i, "lr": 0.1, "epochs": args.epochs, "dataset": "mnist5k",
                  "model": "mlp", "batch_size": 128, "noise_ratio": 0.2, "strategy": "energy"}
        run_id, _ = tracker.trial_run(
            exp_id, stage="load", trial_id=f"trial_{i:04d}", run_name=f"load-{i}",
            params=params, tags={tracking.TAG_SWEEP: name, tracking.TAG_SESSION: "s0",
                                 tracking.TAG_EXPERIMENT: "load", tracking.TAG_KIND: "trial"})
        tracker.set_tags(run_id, {"raydiff.node": "127.0.0.1", "raydiff.pid": str(os.getpid())})
        for epoch in range(args.epochs):
            now = int(time.time() * 1000)
            tracker.log_metrics(run_id, [(f"m{k}", epoch * 0.01 + k, epoch, now)
                                         for k in range(args.metrics)])
            if args.epoch_s:
                time.sleep(args.epoch_s)
        tracker.log_artifact(run_id, artifact)
        tracker.end(run_id, "FINISHED")
    except Exception as exc:  # noqa: BLE001 - a trial's error is a result here
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
        if run_id is not None:
            try:
                tracker.end(run_id, "FAILED")
            except Exception:  # noqa: BLE001
                pass
    log.flush()
    results.put({"i": i, "seconds": time.monotonic() - start, "error": error})
    results.close()
    results.join_thread()     # the result is in the pipe before the process goes
    os._exit(0)               # no atexit work: the trial's traffic is what was timed


def _count(uri, name, args, n, out):
    """What the store holds of experiment ``name``."""
    from raydiff import tracking

    tracker = tracking.Tracker(uri)
    client = tracker.client
    exp = tracking.retrying(client.get_experiment_by_name, name)
    runs = tracking.retrying(client.search_runs, [exp.experiment_id], max_results=50000)
    keys = [f"m{k}" for k in range(args.metrics)]

    def one(run):
        rid = run.info.run_id
        points = sum(len({m.step for m in tracking.retrying(client.get_metric_history, rid, k)})
                     for k in keys)
        files = {a.path: a.file_size for a in tracking.retrying(client.list_artifacts, rid)}
        ok = any(size == args.artifact_kb * 1024 for size in files.values())
        return run.info.status, points, ok

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(one, runs))
    statuses = [s for s, _, _ in found]
    out.put({"runs": len(runs), "finished": statuses.count("FINISHED"),
             "running": statuses.count("RUNNING"),
             "points_missing": n * args.epochs * args.metrics - sum(p for _, p, _ in found),
             "artifacts_missing": n - sum(ok for _, _, ok in found)})


def _in_child(ctx, target, *args, timeout=900):
    """Run ``target(*args, queue)`` in a forked process (the parent never opens a store:
    a SQLite engine would be shared by the children it forks) and return what it put."""
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    try:
        return queue.get(timeout=timeout)
    finally:
        proc.join(timeout=30)


def _warm(ctx, folder, args):
    """Import, here and once, everything a trial's traffic imports (MLflow loads its stores
    and artifact repositories lazily), then freeze the heap: the forked trials share these
    pages instead of each copying ~80 MB of them (256 trials would not fit in memory)."""
    import gc

    from raydiff import tracking
    import mlflow.store.artifact.mlflow_artifacts_repo  # noqa: F401 - the proxied artifacts
    import mlflow.store.tracking.rest_store  # noqa: F401 - the HTTP stores

    def once(q):
        folder.mkdir(parents=True, exist_ok=True)
        tracker = tracking.Tracker(f"sqlite:///{folder / 'mlflow.db'}")
        q.put(tracker.experiment_id("warm"))
    _in_child(ctx, once)          # the store made once, not in this process (see _in_child)
    tracker = tracking.Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    run_id, _ = tracker.trial_run(tracker.experiment_id("warm"), stage="s", trial_id="w",
                                  run_name="w", params={"a": 1},
                                  tags={tracking.TAG_SESSION: "w"})
    tracker.log_metrics(run_id, [("m", 1.0, 0, 0)])
    (folder / "a.bin").write_bytes(b"x")
    tracker.log_artifact(run_id, folder / "a.bin")
    tracker.end(run_id)
    gc.collect()
    gc.freeze()


CHILD_MIB = 40          # a forked trial's own memory, measured (~25-30 MiB), with margin


def _available_mib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return None


def load(ctx, uri, store, n, args, work):
    free = _available_mib()
    if free is not None and free < n * CHILD_MIB + 2048:
        print(f"   {store} N={n}: skipped, it needs about {n * CHILD_MIB + 2048} MiB of "
              f"memory and {free} MiB are available", flush=True)
        return None
    name = f"load-{store}-{n}"
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    exp_id = _in_child(ctx, _setup, uri, name)
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_trial, args=(i, uri, exp_id, name, args, folder, ready, go,
                                              results)) for i in range(n)]
    for p in procs:
        p.start()
    for _ in range(n):
        ready.get(timeout=600)
    go.set()
    start = time.monotonic()
    done = []
    while len(done) < n and time.monotonic() - start < args.timeout:
        try:
            done.append(results.get(timeout=5))
        except Exception:  # noqa: BLE001 - queue.Empty: keep waiting
            pass
    wall = time.monotonic() - start
    for p in procs:
        p.join(timeout=1)
        if p.is_alive():
            p.kill()
            p.join()
    retries = sum(f.read_text(errors="replace").count("retrying in")
                  for f in folder.glob("trial*.log"))
    counted = _in_child(ctx, _count, uri, name, args, n)
    seconds = sorted(d["seconds"] for d in done)
    errors = [d["error"] for d in done if d["error"]]
    return {"store": store, "n": n, "wall": wall, **counted, "retries": retries,
            "errors": len(errors), "killed": n - len(done),
            "first_error": errors[0] if errors else "",
            "load": os.getloadavg()[0],
            "slowest": seconds[-1] if seconds else float("nan"),
            "median": statistics.median(seconds) if seconds else float("nan")}


def _row(r):
    lost = r["n"] - r["runs"]
    return (f"| {r['store']} | {r['n']} | {r['wall']:.1f} | {r['finished']} | {r['running']} | "
            f"{lost} | {r['points_missing']} | {r['artifacts_missing']} | {r['retries']} | "
            f"{r['errors'] + r['killed']} | {r['slowest']:.1f} / {r['median']:.1f} | "
            f"{r['load']:.0f} |")


HEAD = ("| store | N | wall s | runs FINISHED | left RUNNING | never created | points missing "
        "| artifacts missing | retries | trials failed | slowest / median process s "
        "| load avg |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None):
    args = _args(argv)
    pythonpath = Path(args.raydiff).absolute() if args.raydiff else REPO
    sys.path.insert(0, str(pythonpath))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath),
                                                              os.environ.get("PYTHONPATH")]))
    ctx = multiprocessing.get_context("fork")
    work = Path(args.work or tempfile.mkdtemp(prefix="tracker-load-"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)     # run as root, raydiff server's PostgreSQL runs as `postgres`
    _warm(ctx, work / "warm", args)
    load_avg = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"== tracker load: {args.epochs} epochs x {args.metrics} metrics, "
          f"{args.artifact_kb} KB artifact, epochs {args.epoch_s} s apart; raydiff from "
          f"{pythonpath}; {os.cpu_count()} CPUs, load average {load_avg}"
          + (" (smoke)" if args.smoke else ""), flush=True)
    rows = []
    for store in args.stores:
        server = None
        try:
            if store == "server-postgresql":
                from raydiff.server import postgres_bin
                if postgres_bin() is None:
                    print(f"   {store}: skipped, PostgreSQL's initdb/pg_ctl are not installed "
                          f"(apt-get install postgresql)", flush=True)
                    continue
            if store == "sqlite":
                uri = f"sqlite:///{work / 'sqlite' / 'mlflow.db'}"
                (work / "sqlite").mkdir(parents=True, exist_ok=True)
            else:
                server = Server(store, work / store, pythonpath)
                uri = server.uri
                print(f"   {store}: up in {server.start_seconds:.0f} s at {uri}", flush=True)
            for n in args.n:
                r = load(ctx, uri, store, n, args, work)
                if r is None:
                    continue
                rows.append(r)
                print(f"   {_row(r)}" + (f"  first error: {r['first_error']}"
                                         if r["first_error"] else ""), flush=True)
        finally:
            if server is not None:
                server.stop()
    print(HEAD)
    for r in rows:
        print(_row(r))
    lost = sum(r["n"] - r["finished"] + r["points_missing"] + r["artifacts_missing"]
               for r in rows)
    if args.work:
        kept = f"; the stores are in {work}"
    else:
        shutil.rmtree(work, ignore_errors=True)
        kept = ""
    print(f"summary: {len(rows)} loads, {'nothing lost' if not lost else f'{lost} lost'}"
          + kept)
    return 1 if args.check and lost else 0


if __name__ == "__main__":
    sys.exit(main())
