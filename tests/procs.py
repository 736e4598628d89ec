"""Real processes for the cluster and fault tests: Ray nodes, an MLflow server, drivers.

Each process starts in a session of its own; :meth:`Proc.stop` ends it and every process
it spawned, found by pid (Ray's daemons and workers included), so nothing outlives a test
and no other Ray or MLflow on the machine is touched (never `ray stop`, which ends them all).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _children():
    """{parent pid: [child pids]} of every process now running (from /proc)."""
    kids = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid):
    """``pid`` and every process below it."""
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _running(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def signal_all(pids, sig):
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get(
        "PYTHONPATH")])), "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Proc:
    """A process in its own session, its output in ``log``."""

    def __init__(self, args, *, log, env=None, cwd=None):
        self.args, self.log = [str(a) for a in args], Path(log)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT,
                                          env=env or base_env(), cwd=cwd,
                                          start_new_session=True)
        self.pid = self.popen.pid

    def output(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self):
        return self.popen.poll() is None

    def kill(self, sig=signal.SIGKILL):
        """Signal this process and everything it started, at once."""
        signal_all(descendants(self.pid), sig)

    def finish(self, timeout=600):
        """Wait up to ``timeout`` seconds for the process to end, then stop whatever of its
        tree is left (also when the wait raised); returns its exit code."""
        try:
            self.popen.wait(timeout=timeout)
        finally:
            self.stop()
        return self.popen.returncode

    def stop(self, grace=10.0):
        """SIGTERM the whole tree, SIGKILL what is left after ``grace`` seconds."""
        pids = descendants(self.pid)
        signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.popen.poll()
            if not any(_running(p) for p in pids):
                break
            time.sleep(0.2)
        signal_all([p for p in pids + descendants(self.pid) if _running(p)], signal.SIGKILL)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def wait_until(check, timeout, what, *, every=0.5, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: the process exited:\n{proc.output()[-3000:]}")
        time.sleep(every)
    raise TimeoutError(f"{what} not within {timeout} s" +
                       (f":\n{proc.output()[-3000:]}" if proc is not None else ""))


class MlflowServer:
    """`mlflow server` on loopback, SQLite store and proxied artifacts under ``folder``."""

    def __init__(self, folder, port=None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.store = f"sqlite:///{self.folder / 'mlflow.db'}"
        self.proc = None

    def start(self, timeout=240):
        from raydiff.tracking import Tracker

        Tracker(self.store)              # create the store once, before the server's workers
        self.proc = Proc([BIN / "mlflow", "server", "--host", "127.0.0.1", "--port", self.port,
                          "--backend-store-uri", self.store, "--serve-artifacts",
                          "--artifacts-destination", self.folder / "artifacts", "--workers", "1"],
                         log=self.folder / "server.log", cwd=self.folder)
        wait_until(self.healthy, timeout, f"mlflow server on port {self.port}", proc=self.proc)
        return self

    def healthy(self):
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self):
        if self.proc is not None:
            self.proc.stop()


class RayCluster:
    """A head and worker nodes, each a `ray start --block` process, on this machine.

    Every node declares its CPUs and GPUs (GPUs need not exist: Ray schedules by the
    declared count) and takes free ports, so it never meets another Ray here. Token
    authentication is on, with a token of this cluster's own.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.temp = Path(tempfile.mkdtemp(prefix="rd-", dir="/tmp"))   # short: socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # a loaded machine can take more than the default minute to register a node, and
        # miss a few of the GCS's health checks without the node being dead
        self.env = base_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex,
                            RAY_raylet_start_wait_time_s=300, RAY_health_check_timeout_ms=30000,
                            RAY_health_check_failure_threshold=20)
        self.nodes = []

    def _start(self, name, extra, *, num_cpus, num_gpus):
        ports = ["--node-manager-port", free_port(), "--object-manager-port", free_port(),
                 "--dashboard-agent-listen-port", free_port(),
                 "--dashboard-agent-grpc-port", free_port(), "--metrics-export-port", free_port(),
                 "--runtime-env-agent-port", free_port()]
        low = 20000 + 1000 * (os.getpid() % 20) + 100 * len(self.nodes)
        proc = Proc([BIN / "ray", "start", "--block", "--node-ip-address", "127.0.0.1",
                     "--num-cpus", num_cpus, "--num-gpus", num_gpus, *extra, *ports,
                     "--min-worker-port", low, "--max-worker-port", low + 99,
                     "--disable-usage-stats"],
                    log=self.folder / f"{name}.log", env=self.env)
        self.nodes.append(proc)
        return proc

    def start_head(self, *, num_cpus, num_gpus):
        return self._start("head", ["--head", "--port", self.port, "--temp-dir", self.temp,
                                    "--include-dashboard", "false",
                                    "--ray-client-server-port", free_port()],
                           num_cpus=num_cpus, num_gpus=num_gpus)

    def add_worker(self, *, num_cpus, num_gpus):
        return self._start(f"worker{len(self.nodes)}", ["--address", self.address],
                           num_cpus=num_cpus, num_gpus=num_gpus)

    def wait_for_nodes(self, n, timeout=240):
        """Block until ``n`` nodes are alive; returns their resources {node_id: {...}}."""
        script = ("import json, sys, time, ray\n"
                  f"ray.init(address='{self.address}', logging_level='ERROR', log_to_driver=False)\n"
                  f"deadline = time.time() + {timeout}\n"
                  "while True:\n"
                  "    nodes = [n for n in ray.nodes() if n['Alive']]\n"
                  f"    if len(nodes) >= {n} or time.time() > deadline: break\n"
                  "    time.sleep(0.5)\n"
                  "print('NODES', json.dumps({x['NodeID']: x['Resources'] for x in nodes}))\n"
                  "print('DEAD', [x['NodeID'] for x in ray.nodes() if not x['Alive']])\n")
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env=self.env, timeout=timeout + 120)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:] + "\n".join(p.output()[-2000:]
                                                                for p in self.nodes))
        line = [x for x in done.stdout.splitlines() if x.startswith("NODES ")][-1]
        nodes = json.loads(line[len("NODES "):])
        if len(nodes) < n:
            logs = [f"{p.name}: {p.read_text(errors='replace')[-1500:]}"
                    for p in sorted(self.temp.glob("session_latest/logs/raylet*.out"))]
            raise TimeoutError(f"{len(nodes)} of {n} Ray nodes up after {timeout} s; "
                               f"{done.stdout.splitlines()[-1]}\n" + "\n".join(logs))
        return nodes

    def stop(self):
        for proc in reversed(self.nodes):
            proc.stop()
        import shutil
        shutil.rmtree(self.temp, ignore_errors=True)
