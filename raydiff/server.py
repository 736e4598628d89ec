"""`raydiff server`: the MLflow tracking server the way a cluster runs it.

One foreground command starts the store (a private PostgreSQL cluster, or a SQLite file in
WAL mode), creates MLflow's tables once, starts ``mlflow server`` on it with proxied
artifacts, prints the tracking URI once ``/health`` answers, and on SIGTERM or SIGINT stops
the server and the PostgreSQL it started, leaving no process behind.

Sizing, for the cluster's design point of 128 trials logging at once: under uvicorn
(MLflow 3's default) each worker process runs MLflow's Flask handlers in anyio's thread
pool, 40 threads, and each thread holds one database connection while it works. MLflow's
default SQLAlchemy pool (5 + 10 overflow) then leaves 25 threads waiting, and after 30 s
they answer 400 "QueuePool limit ... reached": that is how a server as cluster.yaml started
it lost runs at 256 trials. Here the pool covers the threads (10 + 30 per worker) and
PostgreSQL allows every worker's pool at once. SQLite takes one writer at a time however
many connections wait, so its pool is kept small (waiting in the pool's queue is fair,
waiting on SQLite's busy handler is not).

Only :mod:`raydiff.tracking` imports mlflow; this module runs it as a program.
"""

import glob
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BACKENDS = ("postgresql", "sqlite")
WORKERS = 4
THREADS_PER_WORKER = 40            # anyio's default thread limiter, which uvicorn's MLflow app uses
POOL = {"postgresql": (10, 30),    # (pool size, max overflow) per worker: 40 = the threads
        "sqlite": (4, 4)}
PG_DB, PG_ROLE, PG_PORT = "mlflow", "raydiff", 5432
START_TIMEOUT = float(os.environ.get("RAYDIFF_SERVER_START_S", "240"))


class ServerError(RuntimeError):
    """The server cannot start; the message says why and what to do."""


class _Stop(Exception):
    """SIGTERM or SIGINT arrived."""


# -- PostgreSQL ---------------------------------------------------------------------------

def postgres_bin():
    """The folder holding PostgreSQL's ``initdb`` and ``pg_ctl`` (on PATH, else Debian's
    newest /usr/lib/postgresql/<version>/bin), or None when they are not installed."""
    found = shutil.which("initdb"), shutil.which("pg_ctl")
    if all(found):
        return Path(os.path.realpath(found[0])).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()])
    return Path(versions[-1]).parent if versions else None


def default_backend():
    """PostgreSQL where its programs are installed (it holds the cluster's load), else SQLite."""
    return "postgresql" if postgres_bin() is not None else "sqlite"


def _run_as():
    """The user PostgreSQL runs as: ourselves, or ``postgres`` when we are root
    (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        raise ServerError("running as root, and PostgreSQL refuses root: it needs the user "
                          "`postgres` (Debian's postgresql package creates it), or start "
                          "`raydiff server` as an ordinary user, or pass --backend sqlite") from None


def _as_user(user):
    """subprocess arguments that run a program as ``user`` with that user's own group
    (``user=`` alone would keep root's group), or nothing when ``user`` is None."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _reachable_by(user, folder):
    return subprocess.run(["test", "-w", str(folder), "-a", "-x", str(folder)],
                          check=False, **_as_user(user)).returncode == 0


def _pg_data_dir(folder, user):
    """Where the cluster's files live: ``folder/postgres``; as root, when the user
    ``postgres`` cannot reach ``folder`` (e.g. under /root), /var/lib/raydiff/<hash of
    folder>/postgres instead (the same folder gives the same place on the next start)."""
    data = folder / "postgres"
    if user is None:
        return data
    data.mkdir(exist_ok=True)
    shutil.chown(data, user)
    os.chmod(data, 0o700)
    if _reachable_by(user, data):
        return data
    data.rmdir()
    key = hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    other = Path("/var/lib/raydiff") / key / "postgres"
    other.mkdir(parents=True, exist_ok=True)
    os.chmod(other.parent.parent, 0o755)
    os.chmod(other.parent, 0o755)
    shutil.chown(other, user)
    os.chmod(other, 0o700)
    (other.parent / "for").write_text(f"{folder}\n")
    return other


def _pg(bin_dir, user, *args, check=True, timeout=120):
    done = subprocess.run([str(bin_dir / args[0]), *map(str, args[1:])],
                          capture_output=True, text=True, timeout=timeout,
                          start_new_session=True,   # a terminal's Ctrl-C is ours to pass on
                          **_as_user(user))
    if check and done.returncode != 0:
        raise ServerError(f"PostgreSQL's {args[0]} failed ({done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()[-1500:]}")
    return done


class Postgres:
    """A private PostgreSQL cluster under ``folder``: unix socket only, in a private
    folder (no TCP port), trust authentication for the one role."""

    def __init__(self, folder, *, max_connections):
        self.bin = postgres_bin()
        if self.bin is None:
            raise ServerError("PostgreSQL's initdb and pg_ctl were not found (on PATH or in "
                              "/usr/lib/postgresql/*/bin): install Debian's `postgresql` "
                              "package (apt-get install postgresql), or pass --backend sqlite")
        if importlib.util.find_spec("psycopg2") is None:
            raise ServerError("MLflow needs psycopg2 to use PostgreSQL: "
                              "pip install psycopg2-binary (a raydiff dependency), or pass "
                              "--backend sqlite")
        self.user = _run_as()
        self.data = _pg_data_dir(folder, self.user)
        self.max_connections = max_connections
        self.socket_dir = None
        self.started = False

    @property
    def uri(self):
        return f"postgresql+psycopg2://{PG_ROLE}@/{PG_DB}?host={self.socket_dir}&port={PG_PORT}"

    def start(self):
        if not (self.data / "PG_VERSION").exists():
            _pg(self.bin, self.user, "initdb", "-D", self.data, "-U", PG_ROLE, "-A", "trust",
                "-E", "UTF8", "--no-locale", "--no-instructions")
        if _pg(self.bin, self.user, "pg_ctl", "status", "-D", self.data, check=False).returncode == 0:
            # a server left by a raydiff server that was killed outright: ours, stop it
            _pg(self.bin, self.user, "pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w")
        # a short private path: a socket's path may not pass 107 bytes
        self.socket_dir = Path(tempfile.mkdtemp(prefix="raydiff-pg-", dir="/tmp"))
        if self.user:
            shutil.chown(self.socket_dir, self.user)
        self.started = True            # from here on, stop() stops it (even mid-start)
        options = (f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
                   f"-c port={PG_PORT} -c max_connections={self.max_connections} "
                   f"-c shared_buffers=128MB")
        _pg(self.bin, self.user, "pg_ctl", "start", "-D", self.data, "-w", "-t", "120",
            "-l", self.data / "postgresql.log", "-o", options, timeout=180)
        made = _pg(self.bin, self.user, "createdb", "-h", self.socket_dir, "-p", PG_PORT,
                   "-U", PG_ROLE, PG_DB, check=False)
        if made.returncode != 0 and "already exists" not in made.stderr:
            raise ServerError(f"PostgreSQL's createdb failed: {made.stderr.strip()[-1500:]}")
        return self

    def stop(self):
        if self.started:
            _pg(self.bin, self.user, "pg_ctl", "stop", "-D", self.data, "-m", "fast", "-w",
                "-t", "60", check=False)
            self.started = False
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


# -- SQLite -------------------------------------------------------------------------------

def sqlite_store(folder):
    """``folder/mlflow.db``, created once (before the server's workers, which would race to
    create it) and switched to WAL (readers never wait for the writer; the mode is kept in
    the file). WAL needs a local disk: keep the folder off NFS."""
    from raydiff.tracking import Tracker

    db = folder / "mlflow.db"
    Tracker(f"sqlite:///{db}")
    with sqlite3.connect(db, timeout=60) as con:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise ServerError(f"SQLite would not switch {db} to WAL mode (it says {mode!r}); "
                          f"is the folder on a network file system? Use a local folder")
    return f"sqlite:///{db}"


# -- the server ---------------------------------------------------------------------------

def _connect_host(host):
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _url(host, port):
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _check_port(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServerError(f"cannot listen on {host}:{port} ({exc.strerror}): another "
                              f"server holds the port, or the address is not this host's; "
                              f"pass another --port or --host") from None


def healthy(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def server_env(backend, workers):
    """The environment of ``mlflow server``: its SQLAlchemy pool per worker process."""
    size, overflow = POOL[backend]
    return {**os.environ, "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(size),
            "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(overflow),
            "MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE": "3600", "PYTHONUNBUFFERED": "1"}


def _stop_group(popen, grace=15.0, *, group=None):
    """SIGTERM the server's process group (the mlflow command, uvicorn and its workers),
    SIGKILL what is left after ``grace`` seconds. ``group``: the group of a server this
    process did not start (no Popen to reap)."""
    if popen is None and group is None:
        return
    group = popen.pid if popen is not None else group
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if popen is not None:
            popen.poll()
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        if popen is not None:
            popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# which mlflow server a raydiff server serving from a folder started (its process group)
GROUP_FILE = "mlflow-server.json"


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _stop_left_server(folder, out):
    """Stop the mlflow server that a raydiff server killed outright (SIGKILL, OOM) left
    serving from ``folder``, as :meth:`Postgres.start` stops its PostgreSQL: else it holds
    the port, and a restart is refused. One whose raydiff server still runs is left
    alone (the port check then says the port is taken)."""
    path = folder / GROUP_FILE
    try:
        left = json.loads(path.read_text())
        parent, group = int(left["raydiff"]), int(left["mlflow"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    serving, leader = _cmdline(parent), _cmdline(group)
    if b"server" in serving and any(b"raydiff" in a for a in serving):
        return
    if b"mlflow" in leader and b"server" in leader:
        _stop_group(None, group=group)
        out(f"raydiff: stopped the mlflow server (process group {group}) left in {folder} "
            f"by a raydiff server killed outright (pid {parent})", flush=True)
    path.unlink(missing_ok=True)


def serve(*, host="127.0.0.1", port=5000, folder="mlflow-server", backend=None,
          workers=WORKERS, artifacts_destination=None, out=print):
    """Run the tracking server in the foreground until SIGTERM/SIGINT; returns the exit
    code (0 after a clean stop). Raises :class:`ServerError` when it cannot start."""
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ServerError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if workers < 1:
        raise ServerError(f"--workers must be at least 1, not {workers}")
    folder = Path(folder).expanduser().absolute()
    folder.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts_destination or str(folder / "artifacts")
    _stop_left_server(folder, out)
    _check_port(host, port)
    stopping = {"now": False}

    def on_signal(signum, frame):
        if not stopping["now"]:
            stopping["now"] = True
            raise _Stop(signal.Signals(signum).name)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    pg, popen, code = None, None, 0
    try:
        pg, store, where = _backend_store(backend, folder, workers)
        log = folder / "server.log"
        popen = _start_mlflow(store, host=host, port=port, folder=folder, log=log,
                              artifacts=artifacts, workers=workers, backend=backend)
        (folder / GROUP_FILE).write_text(json.dumps({"raydiff": os.getpid(),
                                                     "mlflow": popen.pid}))
        url = _url(host, port)
        local = _url(_connect_host(host), port)
        _wait_healthy(popen, local, log)
        out(f"raydiff: tracking URI {local}", flush=True)
        if local != url:
            out(f"raydiff: listening on {host}:{port}: other hosts use "
                f"http://<this host's address>:{port}", flush=True)
        out(f"raydiff: backend {where}; artifacts {artifacts}; {workers} workers; "
            f"log {log}; SIGTERM or Ctrl-C stops it", flush=True)
        while popen.poll() is None:
            time.sleep(0.5)
        code = 1
        out(f"raydiff: mlflow server exited ({popen.returncode}); its log, {log}:\n"
            f"{_tail(log)}", flush=True)
    except _Stop as why:
        out(f"raydiff: {why}: stopping the tracking server", flush=True)
    finally:
        stopping["now"] = True        # a second signal does not cut the clean-up short
        try:
            _stop_group(popen)
            (folder / GROUP_FILE).unlink(missing_ok=True)
            if pg is not None:
                pg.stop()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
    return code


def _backend_store(backend, folder, workers):
    """(the PostgreSQL started, or None; the store URI; a line saying where it is) of the
    server's backend store, its tables made once before MLflow's workers start."""
    if backend != "postgresql":
        return None, sqlite_store(folder), f"SQLite {folder / 'mlflow.db'} (WAL)"
    size, overflow = POOL[backend]
    pg = Postgres(folder, max_connections=workers * (size + overflow) + 20).start()
    try:
        from raydiff.tracking import Tracker
        Tracker(pg.uri).check(timeout=60)
    except BaseException:
        pg.stop()
        raise
    return pg, pg.uri, f"PostgreSQL {pg.data} (socket in {pg.socket_dir})"


def _start_mlflow(store, *, host, port, folder, log, artifacts, workers, backend):
    """Start ``mlflow server`` on ``store`` in a process group of its own, its output
    appended to ``log``; returns the Popen at once."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
           "--backend-store-uri", store, "--serve-artifacts",
           "--artifacts-destination", artifacts, "--workers", str(workers),
           # uvicorn kills a worker that misses a 5 s health ping: a loaded head's
           # workers, still importing MLflow, would be killed and restarted in a loop
           "--uvicorn-opts", "--timeout-worker-healthcheck 120 --timeout-keep-alive 30"]
    with open(log, "ab") as sink:
        return subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=folder,
                                env=server_env(backend, workers), start_new_session=True)


def _wait_healthy(popen, local, log):
    """Wait until the server at ``local`` answers /health (ServerError with the log's
    tail when it exits first or takes longer than START_TIMEOUT)."""
    deadline = time.monotonic() + START_TIMEOUT
    while not healthy(local):
        if popen.poll() is not None:
            raise ServerError(f"mlflow server exited ({popen.returncode}) before answering; "
                              f"its log, {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise ServerError(f"mlflow server did not answer {local}/health within "
                              f"{START_TIMEOUT:.0f} s; its log, {log}:\n{_tail(log)}")
        time.sleep(0.5)


def _tail(path, n=3000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"
