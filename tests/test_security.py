"""What raydiff opens to the network, and what it reads from files, is safe by default."""

import ast
import inspect
import re
import subprocess

import pytest
import torch
from ray import tune

from conftest import REPO
from raydiff.cli import parser
from raydiff.tune import trainable
from raydiff.tune.runner import run_sweep

SOURCES = sorted((REPO / "raydiff").rglob("*.py")) + sorted((REPO / "benchmarks").rglob("*.py"))


def _calls(name):
    """(file, ast.Call) of every call to ``<something>.<name>(...)`` in the package."""
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == name):
                yield path, node


def test_servers_bind_loopback_unless_asked():
    p = parser()
    assert p.parse_args(["ui"]).host == "127.0.0.1"
    assert p.parse_args(["run", "x.yaml"]).dashboard_host == "127.0.0.1"
    assert p.parse_args(["run", "x.yaml", "--dashboard-host", "0.0.0.0"]).dashboard_host == "0.0.0.0"
    assert inspect.signature(run_sweep).parameters["dashboard_host"].default == "127.0.0.1"


def test_yaml_is_read_with_the_safe_loader_only():
    unsafe = [f"{p.name}:{c.lineno}" for p, c in _calls("load")
              if isinstance(c.func.value, ast.Name) and c.func.value.id == "yaml"]
    unsafe += [f"{p.name}:{c.lineno}" for name in ("unsafe_load", "full_load", "load_all")
               for p, c in _calls(name)]
    assert not unsafe
    assert any(True for _ in _calls("safe_load"))


def test_torch_load_always_weights_only():
    calls = [(p, c) for p, c in _calls("load")
             if isinstance(c.func.value, ast.Name) and c.func.value.id == "torch"]
    assert calls
    for path, call in calls:
        kw = {k.arg: k.value for k in call.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
            f"{path}:{call.lineno}"


class _Payload:
    """Unpickling this runs code: what a tampered checkpoint could carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _restore_from(folder, monkeypatch):
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(folder)))
    tags = {}
    return trainable._restore_state(tags), tags


def test_a_checkpoint_carrying_code_is_refused_not_run(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"epoch": 3, "payload": _Payload(str(marker))}, folder / "state.pt")
    state, tags = _restore_from(folder, monkeypatch)
    assert state is None and not marker.exists()
    assert "restarting from scratch" in tags["raydiff.checkpoint_error"]


def test_a_clean_checkpoint_restores(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"epoch": 3, "model": {"w": torch.ones(2)}}, folder / "state.pt")
    state, tags = _restore_from(folder, monkeypatch)
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.ones(2)) and not tags


SECRET = re.compile(r"AKIA[0-9A-Z]{16}|aws_secret_access_key\s*[:=]|-----BEGIN [A-Z ]*PRIVATE KEY"
                    r"|\b(password|passwd|secret|token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{8,}"
                    r"|://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)


def test_no_secret_in_the_repository():
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert "cluster.yaml" in files and "cluster-local.yaml" in files
    found = []
    for name in files:
        path = REPO / name
        if not path.is_file() or path.suffix in (".png", ".parquet", ".npy", ".pt"):
            continue
        text = path.read_text(errors="ignore")
        found += [f"{name}: {m.group(0)[:40]}" for m in SECRET.finditer(text)
                  if name != "tests/test_security.py"]
    assert not found


def test_the_secret_scan_finds_a_planted_key():
    assert SECRET.search("aws_access_key_id: AKIA" + "ABCDEFGHIJKLMNOP")
    assert SECRET.search("uri: postgresql://raydiff:hunter2hunter2@db:5432/mlflow")
    assert not SECRET.search("ssh_private_key: ~/.ssh/id_ed25519")


@pytest.mark.parametrize("path", ["cluster.yaml", "cluster-local.yaml"])
def test_cluster_dashboards_stay_on_loopback(path):
    text = (REPO / path).read_text()
    assert "--dashboard-host=0.0.0.0" not in text and "--dashboard-host=127.0.0.1" in text
