"""Faults a sweep meets on a cluster, each struck for real: processes killed, the tracking
server gone, checkpoints corrupted. The driver-killed-and-resumed case is in
test_end_to_end.py."""

import json
import multiprocessing
import subprocess
import sys
import time

import yaml

from procs import free_port
from raydiff import tracking

SMALL = {"name": "faults", "experiment": "train_classifier", "resources": {"cpu": 1},
         "config": {"dataset": "blobs", "epochs": 5, "seed": {"grid": [0, 1]}}}


def test_unreachable_tracking_server_refused_at_once_before_ray(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SMALL))
    uri = f"http://127.0.0.1:{free_port()}"           # nothing listens there
    script = ("import json, sys, time\nfrom raydiff.cli import main\nt = time.monotonic()\n"
              f"code = main(['run', 's.yaml', '--tracking-uri', '{uri}'])\n"
              "print(json.dumps({'code': code, 'seconds': time.monotonic() - t,"
              " 'ray': 'ray' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 2 and not result["ray"], done.stderr[-2000:]
    assert "retrying" not in done.stdout + done.stderr   # refused at once, not retried
    print(f"refused in {result['seconds']:.1f} s (imports included)")
    assert f"the MLflow server at {uri} is unreachable" in done.stderr
    assert "mlflow server --host 127.0.0.1" in done.stderr      # and how to start one
    assert not (tmp_path / "ray_results").exists()


def _open_store(uri, barrier, results):
    barrier.wait()
    try:
        tracking.Tracker(uri)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001
        results.put(f"{type(exc).__name__}: {exc}"[:200])


def test_many_processes_create_a_new_store_at_once(tmp_path):
    """The trials of a sweep (or a server's workers) opening one new SQLite store together:
    MLflow's own table creation races and fails; the tracker takes a lock."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [ctx.Process(target=_open_store, args=(uri, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4
    assert tracking.Tracker(uri).client.search_experiments()      # a usable store
