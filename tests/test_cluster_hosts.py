"""The cluster path as a user takes it, on real hosts: `scripts/local_hosts.sh` makes two
SSH hosts on this machine (network, PID and mount namespaces of their own), and the
walkthrough of docs/cluster.md runs on them with `cluster-local.yaml`: `ray up`, `ray
exec ... raydiff run`, the tracking server read through the SSH tunnel, `ray dashboard`,
`ray down`. Then a host is lost mid-sweep (every process of the worker host killed at
once), alone and together with the driver.

Slow (minutes) and root only: marked ``cluster_hosts``, which `make test` leaves out;
`.ci/run` runs them in a step of their own. Each test tears its cluster down, and the
module its hosts, even when it fails.
"""

import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from procs import BIN, REPO, Proc, base_env, free_port, wait_until
from raydiff import tracking

pytestmark = [pytest.mark.cluster_hosts, pytest.mark.timeout(900)]

SCRIPT = REPO / "scripts" / "local_hosts.sh"
STATE = Path("/var/tmp/raydiff-hosts")          # cluster-local.yaml names its key there
CLUSTER = "cluster-local.yaml"
HEAD, WORKER = "10.213.7.1", "10.213.7.2"
SERVER = f"http://{HEAD}:5000"                  # the head's tracking server, on the bridge
KEY = STATE / "id_ed25519"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ExitOnForwardFailure=yes"]


def _missing():
    """Why these tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "they need root (network namespaces, a bridge, mounts)"
    for tool in ("ip", "unshare", "nsenter", "ssh", "ssh-keygen", "rsync", "flock"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    if not Path("/usr/sbin/sshd").exists():
        return "sshd is missing (Debian: apt-get install openssh-server)"
    probe = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"namespaces are not allowed here: {probe.stderr.strip()[:200]}"
    return None


def script(*args, timeout=180, check=True):
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"local_hosts.sh {' '.join(args)}: {done.stdout}{done.stderr}")
    return done


def host_processes(i):
    """[(pid, command line)] of every process on host ``i``."""
    out = []
    for pid in script("pids", str(i)).stdout.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        out.append((int(pid), cmd.strip()))
    return out


def only_sshd(i):
    procs = host_processes(i)
    return len(procs) == 1 and procs[0][1].startswith("sshd")


class Launcher:
    """The machine that runs `ray up`: this one, with a home of its own that holds the
    cluster's Ray token (`ray get-auth-token --generate`, as docs/cluster.md says)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        home = self.folder / "home"
        home.mkdir(parents=True, exist_ok=True)
        self.env = base_env(HOME=home, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_URI"):
            self.env.pop(key, None)
        self.ray("get-auth-token", "--generate", timeout=120)
        self.token = (home / ".ray" / "auth_token").read_text().strip()
        self.times = {}                 # walkthrough step -> wall seconds

    def ray(self, *args, timeout=600, check=True):
        done = subprocess.run([str(BIN / "ray"), *map(str, args)], capture_output=True,
                              text=True, cwd=REPO, env=self.env, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"ray {' '.join(map(str, args[:2]))} failed ({done.returncode}):"
                                 f"\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def exec(self, command, timeout=600, check=True):
        return self.ray("exec", CLUSTER, command, timeout=timeout, check=check)

    def background(self, name, *args):
        return Proc([BIN / "ray", *args], log=self.folder / f"{name}.log", env=self.env, cwd=REPO)

    def alive_nodes(self):
        done = self.exec("python -c \"import ray; ray.init(address='auto', logging_level="
                         "'ERROR'); print('ALIVE', sorted(n['NodeManagerAddress'] for n in "
                         "ray.nodes() if n['Alive']))\"", timeout=180, check=False)
        found = re.findall(r"ALIVE (\[.*\])", done.stdout)
        return json.loads(found[-1].replace("'", '"')) if found else []

    def up(self):
        # the launcher's record of an earlier cluster of this name is stale: the hosts are new
        Path("/tmp/ray/cluster-raydiff-local.state").unlink(missing_ok=True)
        self.ray("up", "-y", "--no-config-cache", CLUSTER, timeout=600)
        wait_until(lambda: self.alive_nodes() == [HEAD, WORKER], 300,
                   "the worker joining the head")

    def down(self):
        self.ray("down", "-y", CLUSTER, timeout=300, check=False)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    why = _missing()
    if why:
        pytest.skip(f"local cluster hosts unavailable: {why}. CI runs these as root after "
                    f"installing openssh-server and rsync")
    script("down", check=False)                     # whatever an aborted run left
    try:
        script("up", "2")
        yield Launcher(tmp_path_factory.mktemp("launcher"))
    finally:
        script("down", check=False)


@pytest.fixture(scope="module")
def cluster(launcher):
    """One `ray up` for the module: its tests run in file order as one user's session
    would (the walkthrough, a host lost, the host back and lost again with the driver,
    `ray down`), which keeps the module to one cluster start."""
    try:
        with timed(launcher.times, "ray up -y cluster-local.yaml, until the worker joined"):
            launcher.up()
        yield launcher
    finally:
        launcher.down()


@contextlib.contextmanager
def timed(times, step):
    start = time.monotonic()
    try:
        yield
    finally:
        times[step] = time.monotonic() - start


def _get(url, token=None, timeout=20):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def _finished_counts(log):
    """{stage: trials finished} from a driver's log."""
    return {m[0]: int(m[1]) for m in re.findall(r"raydiff: stage (\S+): (\d+) trials finished",
                                                 log)}


def _hosts_counts(log):
    """{(stage, host): configs finished there} from the driver's stage lines."""
    return {(m[0], host): int(n)
            for m in re.findall(r"raydiff: stage (\S+): .*; ran on ([^;\n]+)", log)
            for host, n in re.findall(r"([\d.]+): (\d+)", m[1])}


def test_walkthrough_on_two_hosts(cluster, tmp_path):
    """docs/cluster.md, "Walkthrough (your own machines)", step by step (`ray up` is the
    fixture's, `ray down` the module's last test)."""
    launcher, times, procs = cluster, cluster.times, []
    try:
        port = free_port()
        dashboard = launcher.background("dashboard", "dashboard", "-p", port, CLUSTER)
        procs.append(dashboard)
        with timed(times, "ray exec raydiff run sweeps/demo.yaml --smoke"):
            run = launcher.exec("cd ~/raydiff && raydiff run sweeps/demo.yaml --smoke "
                                "--address auto", timeout=900)
        log = run.stdout + run.stderr
        finished = _finished_counts(log)
        assert finished and re.search(r"\d+ trials finished, 0 failed", log), log[-3000:]

        # MLflow from this machine, as the docs reach it: an SSH tunnel to the head's
        # private address
        with timed(times, "MLflow through the SSH tunnel: every run and artifact"):
            head = launcher.ray("get-head-ip", CLUSTER).stdout.strip().splitlines()[-1]
            # as the docs take it: the last line ray exec prints
            private = launcher.exec("hostname -I").stdout.strip().splitlines()[-1].split()[0]
            assert head == private == HEAD
            local = free_port()
            tunnel = Proc(["ssh", "-i", KEY, *SSH_OPTS, "-N", "-L", f"{local}:{private}:5000",
                           f"root@{head}"], log=tmp_path / "tunnel.log")
            procs.append(tunnel)
            uri = f"http://127.0.0.1:{local}"
            wait_until(lambda: _get(f"{uri}/health")[0] == 200, 60, "the tunnel", proc=tunnel)
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name("demo")
            runs = client.search_runs([exp.experiment_id], "tags.`raydiff.kind` = 'trial'",
                                      max_results=5000)
            assert len(runs) == sum(finished.values())
            assert {r.info.status for r in runs} == {"FINISHED"}
            placed = collections.Counter(r.data.tags["raydiff.node"] for r in runs)
            # Which host runs the smoke's short trials is a race (docs/cluster.md,
            # "Placement of short trials"): the host-loss tests below put packs on the worker
            # for sure. Here each stage's line names both hosts, with what MLflow recorded.
            assert set(placed) <= {HEAD, WORKER}, placed
            per_stage = collections.Counter((r.data.tags["raydiff.stage"],
                                             r.data.tags["raydiff.node"]) for r in runs)
            assert _hosts_counts(log) == {(s, h): per_stage.get((s, h), 0)
                                          for s in finished for h in (HEAD, WORKER)}, log
            stored = STATE / "h1" / "home" / "mlflow" / "artifacts"   # the head's disk
            files = 0
            for r in runs:
                listed = [a.path for a in client.list_artifacts(r.info.run_id)]
                assert listed, f"run {r.info.run_id} has no artifact"
                for path in listed:
                    assert list(stored.glob(f"*/{r.info.run_id}/artifacts/{path}")), path
                    files += 1

        with timed(times, "ray dashboard: the API with the token"):
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: _get(f"{base}/api/cluster_status", launcher.token)[0] == 200,
                       120, "the dashboard through `ray dashboard`", proc=dashboard)
            assert _get(f"{base}/api/cluster_status")[0] == 401            # no token, no API
            status, body = _get(f"{base}/nodes?view=summary", launcher.token)
            assert status == 200
            alive = [n for n in json.loads(body)["data"]["summary"]
                     if n.get("raylet", {}).get("state") == "ALIVE"]
            assert sorted(n["ip"] for n in alive) == [HEAD, WORKER]
    finally:
        for proc in procs:
            proc.stop()
    print(f"\ntrials per host: {dict(placed)}; by stage: "
          f"{ {f'{s}@{n}': c for (s, n), c in sorted(per_stage.items())} }; "
          f"{files} artifacts on the head's disk")


# -- a host lost mid-sweep -----------------------------------------------------------------

EPOCHS, EVERY = 1500, 150


def _sweep(name):
    """A packed stage of 8 configs in 4 packs of 2, one CPU each: the 4 CPUs of the two
    hosts run them all at once, two packs on each host. Full-batch MNIST (5,000 digits)."""
    return {"name": name, "experiment": "train_classifier", "resources": {"cpu": 1},
            "max_failures": 2, "pack": 2,
            "config": {"dataset": "mnist5k", "noise_ratio": 0.2, "hidden": [16],
                       "epochs": EPOCHS, "checkpoint_every": EVERY,
                       "seed": {"grid": list(range(8))}}}


def _runs(client, name):
    exp = tracking.retrying(client.get_experiment_by_name, name)
    return [] if exp is None else tracking.retrying(
        client.search_runs, [exp.experiment_id], "tags.`raydiff.kind` = 'trial'",
        max_results=1000)


def _last_step(client, run):
    return max((m.step for m in tracking.retrying(client.get_metric_history,
                                                  run.info.run_id, "loss")), default=0)


def _worker_packs_past_checkpoint(client, name):
    """The runs on the worker host once every one of them has logged past the first
    checkpoint, else None."""
    runs = [r for r in _runs(client, name) if r.data.tags.get("raydiff.node") == WORKER]
    if runs and all(r.info.status == "RUNNING" and _last_step(client, r) > EVERY + 10
                    for r in runs):
        return runs
    return None


def _wait_for_worker_packs(client, name, driver):
    found = {}

    def check():
        found["runs"] = _worker_packs_past_checkpoint(client, name)
        return found["runs"] is not None

    wait_until(check, 600, "packs on the worker host past their first checkpoint", every=2,
               proc=driver)
    return found["runs"]


def _start_sweep(cluster, name, tmp_path, *extra):
    (STATE / "shared" / f"{name}.yaml").write_text(yaml.safe_dump(_sweep(name)))
    return cluster.background(f"driver-{name}", "exec", CLUSTER,
                              f"cd ~/raydiff && raydiff run /shared/{name}.yaml --address auto"
                              + "".join(f" {e}" for e in extra))


def _check_sweep(client, name, lost, log):
    """Every config one FINISHED run, each (metric, step) once; the lost host's configs
    retried and resumed from a checkpoint. Returns the counts for the report."""
    runs = _runs(client, name)
    seeds = collections.Counter(int(r.data.params["seed"]) for r in runs)
    assert seeds == {s: 1 for s in range(8)}, seeds              # one run per config
    assert {r.info.status for r in runs} == {"FINISHED"}
    duplicates = 0
    for r in runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "loss")]
        duplicates += len(steps) - len(set(steps))
        assert sorted(set(steps)) == list(range(1, EPOCHS + 1)), r.data.params["seed"]
    assert duplicates == 0
    retried = [r for r in runs if r.data.tags.get("raydiff.retried") == "true"]
    assert {r.info.run_id for r in lost} <= {r.info.run_id for r in retried}
    resumed = sorted(int(r.data.tags["raydiff.resumed_from_epoch"]) for r in retried
                     if "raydiff.resumed_from_epoch" in r.data.tags)
    for r in runs:
        if r.info.run_id in {x.info.run_id for x in lost}:
            tags = r.data.tags
            assert "raydiff.resumed_from_epoch" in tags, (r.data.params["seed"], tags)
            start = int(tags["raydiff.resumed_from_epoch"])       # from the pack's checkpoint
            assert EVERY <= start < EPOCHS and start % EVERY == 0
            assert tags["raydiff.node"] == HEAD                   # finished on the survivor
            assert "raydiff.checkpoint_error" not in tags
    assert re.search(rf"{len(retried)} configs? retried: {len(resumed)} resumed from a "
                     r"checkpoint", log), log[-3000:]
    return {"configs": len(runs), "FINISHED": len(runs), "retried": len(retried),
            "resumed_from_epochs": resumed, "duplicate points": duplicates}


def test_worker_host_lost_mid_sweep(cluster, tmp_path):
    client = MlflowClient(SERVER)
    driver = _start_sweep(cluster, "hostloss", tmp_path)
    try:
        lost = _wait_for_worker_packs(client, "hostloss", driver)
        at = {r.data.params["seed"]: _last_step(client, r) for r in lost}
        start = time.monotonic()
        script("kill", "2")                                    # the worker host is gone
        assert driver.finish(timeout=700) == 0, driver.output()[-4000:]
        seconds = time.monotonic() - start
    finally:
        driver.stop()
    counts = _check_sweep(client, "hostloss", lost, driver.output())
    print(f"\nhost lost: worker killed with seeds {sorted(at)} at epochs {at}; the sweep "
          f"finished {seconds:.0f} s later; {counts}")
    print([line for line in driver.output().splitlines() if "retried" in line][-1])


def test_worker_host_and_driver_lost_then_resumed(cluster, tmp_path):
    client = MlflowClient(SERVER)
    # the lost host comes back (a fresh /tmp, as after a reboot): the autoscaler, which
    # lost contact with its raylet, sets it up and starts Ray on it again by itself
    started = time.monotonic()
    script("up", "2")
    wait_until(lambda: cluster.alive_nodes() == [HEAD, WORKER], 400,
               "the autoscaler restarting Ray on the host that came back", every=5)
    print(f"\nthe lost host back in the cluster {time.monotonic() - started:.0f} s after "
          f"it came up")
    driver = _start_sweep(cluster, "hostloss2", tmp_path)
    try:
        lost = _wait_for_worker_packs(client, "hostloss2", driver)
        drivers = [pid for pid, cmd in host_processes(1)
                   if "raydiff run" in cmd and "hostloss2" in cmd and "bash" not in cmd]
        assert drivers, host_processes(1)
        for pid in drivers:                                     # the driver, on the head
            os.kill(pid, signal.SIGKILL)
        script("kill", "2")                                     # and the worker host
        driver.finish(timeout=120)
    finally:
        driver.stop()
    head_runs = [r for r in _runs(client, "hostloss2") if r.data.tags.get("raydiff.node") == HEAD]
    start = time.monotonic()
    resumed = cluster.exec("cd ~/raydiff && raydiff run /shared/hostloss2.yaml --address auto "
                           "--resume", timeout=700)
    seconds = time.monotonic() - start
    log = resumed.stdout + resumed.stderr
    assert "resuming session" in log
    counts = _check_sweep(client, "hostloss2", lost, log)
    # the head's own packs died with the driver (their actors belong to its job): they too
    # resume, on the head, from their checkpoints
    unfinished = [r for r in head_runs if r.info.status != "FINISHED"]
    print(f"\nhost and driver lost: {len(lost)} configs on the lost host, {len(unfinished)} "
          f"unfinished on the head; --resume took {seconds:.0f} s; {counts}")


def test_ray_down_leaves_no_process_on_either_host(cluster):
    # the host lost last comes back first, so that `ray down` meets the whole cluster
    script("up", "2")
    wait_until(lambda: cluster.alive_nodes() == [HEAD, WORKER], 400,
               "the autoscaler restarting Ray on the host that came back", every=5)
    times = cluster.times
    with timed(times, "ray down -y cluster-local.yaml"):
        cluster.ray("down", "-y", CLUSTER, timeout=300)
    with timed(times, "after ray down, until no process but sshd on either host"):
        wait_until(lambda: only_sshd(1) and only_sshd(2), 180,
                   "every process but sshd gone from both hosts")
    print("\nwalkthrough, wall time per step (under load):")
    for step, seconds in times.items():
        print(f"  {seconds:6.1f} s  {step}")
