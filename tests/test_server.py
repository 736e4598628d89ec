"""`raydiff server` for real: it starts PostgreSQL and the MLflow server, answers /health,
takes a trial's run through the Tracker with every point and artifact, and on SIGTERM
leaves no process behind (PostgreSQL included). Its refusals are checked in-process."""

import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from procs import Proc, _running, descendants, free_port, signal_all, wait_until
from raydiff import server, tracking

needs_postgres = pytest.mark.skipif(
    server.postgres_bin() is None,
    reason="PostgreSQL's initdb and pg_ctl are not installed (Debian: apt-get install "
           "postgresql, as .ci/run does): `raydiff server --backend postgresql` is untested here")


def _postmaster(data):
    try:
        return int((Path(data) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@needs_postgres
def test_server_on_postgresql_logs_a_run_whole_and_stops_leaving_nothing(tmp_path):
    # a folder the user `postgres` can reach when the test runs as root (pytest's own
    # /tmp/pytest-of-root is private)
    folder = Path(tempfile.mkdtemp(prefix="rd-server-", dir="/tmp"))
    os.chmod(folder, 0o755)
    proc = Proc([sys.executable, "-m", "raydiff.cli", "server", "--port", free_port(),
                 "--dir", folder, "--backend", "postgresql", "--workers", "1"],
                log=tmp_path / "server.out")
    postmaster = None
    try:
        started = time.monotonic()
        wait_until(lambda: "tracking URI" in proc.output(), 300, "raydiff server", proc=proc)
        up = time.monotonic() - started
        out = proc.output()
        uri = re.search(r"tracking URI (\S+)", out).group(1)
        socket_dir = re.search(r"socket in (\S+)\)", out).group(1)
        assert server.healthy(uri)
        data = re.search(r"backend PostgreSQL (\S+) ", out).group(1)
        postmaster = _postmaster(data)
        assert postmaster and _running(postmaster)

        tracker = tracking.Tracker(uri, flush_seconds=3600)
        exp = tracker.experiment_id("server-test")
        run_id, status = tracker.trial_run(exp, stage="s", trial_id="t0", run_name="r",
                                           params={"lr": 0.1, "seed": 3},
                                           tags={tracking.TAG_SESSION: "x"})
        for epoch in range(20):
            tracker.log_metrics(run_id, [("loss", 1 / (epoch + 1), epoch, 1000 + epoch),
                                         ("acc", epoch / 20, epoch, 1000 + epoch)])
        table = tmp_path / "per_sample.parquet"
        table.write_bytes(os.urandom(50_000))
        tracker.log_artifact(run_id, table)
        tracker.end(run_id)
        run = tracker.client.get_run(run_id)
        assert status == "NEW" and run.info.status == "FINISHED"
        assert run.data.params == {"lr": "0.1", "seed": "3"}
        for key in ("loss", "acc"):
            assert sorted(m.step for m in tracker.client.get_metric_history(run_id, key)) == \
                list(range(20))
        [artifact] = tracker.client.list_artifacts(run_id)
        assert artifact.path == "per_sample.parquet" and artifact.file_size == 50_000
        assert (folder / "artifacts").is_dir()          # served from the server's folder

        pids = descendants(proc.pid) + descendants(postmaster)
        assert len(pids) > 3                # the launcher, mlflow, uvicorn, postgres's own
        stopping = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.popen.wait(timeout=120) == 0
        left = [p for p in pids if _running(p)]
        assert left == [], f"still running after SIGTERM: {left}"
        assert not Path(socket_dir).exists() and _postmaster(data) is None
        print(f"up in {up:.1f} s, stopped in {time.monotonic() - stopping:.1f} s, "
              f"{len(pids)} processes ended")
    finally:
        proc.stop()
        if postmaster and _running(postmaster):
            os.kill(postmaster, signal.SIGQUIT)
        shutil.rmtree(folder, ignore_errors=True)


def test_postgresql_backend_without_postgresql_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "postgres_bin", lambda: None)
    assert server.default_backend() == "sqlite"
    with pytest.raises(server.ServerError, match=r"apt-get install postgresql.*--backend sqlite"):
        server.Postgres(tmp_path, max_connections=20)


def test_a_taken_port_is_refused_naming_the_option(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(server.ServerError, match=f"127.0.0.1:{port}.*--port"):
            server.serve(port=port, folder=tmp_path / "srv", backend="sqlite")


def test_an_unknown_backend_is_refused_with_the_choices(tmp_path):
    with pytest.raises(server.ServerError, match="unknown backend 'mysql'.*postgresql, sqlite"):
        server.serve(folder=tmp_path, backend="mysql")


def test_a_server_killed_outright_is_replaced_by_the_next_start_in_its_folder(tmp_path):
    """SIGKILL reaches `raydiff server` alone: its mlflow server lives on and holds the
    port. The next `raydiff server` in the same folder stops that one and serves."""
    port, folder = free_port(), tmp_path / "srv"
    args = [sys.executable, "-m", "raydiff.cli", "server", "--port", port, "--dir", folder,
            "--backend", "sqlite", "--workers", "1"]
    first = Proc(args, log=tmp_path / "first.out")
    second, left = None, []
    try:
        wait_until(lambda: "tracking URI" in first.output(), 300, "raydiff server", proc=first)
        uri = re.search(r"tracking URI (\S+)", first.output()).group(1)
        left = [p for p in descendants(first.pid) if p != first.pid]
        os.kill(first.pid, signal.SIGKILL)
        first.popen.wait(timeout=30)
        assert server.healthy(uri) and any(_running(p) for p in left)     # still serving

        second = Proc(args, log=tmp_path / "second.out")
        wait_until(lambda: "tracking URI" in second.output(), 300, "the second raydiff server",
                   proc=second)
        assert f"left in {folder} by a raydiff server killed outright (pid {first.pid})" in \
            second.output()
        assert not any(_running(p) for p in left)
        assert server.healthy(uri)                                     # the second one's
        os.kill(second.pid, signal.SIGTERM)
        assert second.popen.wait(timeout=120) == 0
        assert not (folder / server.GROUP_FILE).exists()
    finally:
        first.stop()
        if second is not None:
            second.stop()
        signal_all([p for p in left if _running(p)], signal.SIGKILL)
