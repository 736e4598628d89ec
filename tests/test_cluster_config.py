"""The cluster files pass Ray's own validation (what `ray up` runs) and say what they must."""

import copy

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from conftest import REPO

AWS, LOCAL = REPO / "cluster.yaml", REPO / "cluster-local.yaml"


def _load(path):
    return yaml.safe_load(path.read_text())


def _validated(raw):
    config = prepare_config(copy.deepcopy(raw))      # defaults merged as `ray up` does
    validate_config(config)
    return config


@pytest.mark.parametrize("path", [AWS, LOCAL], ids=lambda p: p.name)
def test_cluster_files_pass_rays_validation(path):
    _validated(_load(path))


@pytest.mark.parametrize("path", [AWS, LOCAL], ids=lambda p: p.name)
def test_the_validation_catches_a_mistake(path):
    raw = _load(path)
    raw["setup_comands"] = raw.pop("setup_commands")             # a typo'd key
    with pytest.raises(Exception, match="setup_comands"):
        _validated(raw)


def _commands(config, key):
    return " ".join(config.get(key, []))


def test_aws_cluster_head_serves_mlflow_and_gpu_spot_workers_autoscale():
    config = _validated(_load(AWS))
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0                   # no trial runs on the head
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert all(t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" for t in workers)
    assert all(t["min_workers"] < t["max_workers"] for t in workers)    # they autoscale
    head_start = _commands(config, "head_start_ray_commands")
    # the tracking server as raydiff runs it: PostgreSQL, artifacts proxied to S3
    assert "raydiff server --host 0.0.0.0" in head_start and "--backend postgresql" in head_start
    assert "--artifacts-destination s3://" in head_start
    assert "postgresql" in _commands(config, "head_setup_commands")      # its programs
    assert "--dashboard-host=127.0.0.1" in head_start
    setup = _commands(config, "setup_commands")
    assert "-c ~/raydiff/constraints.txt" in setup                 # the pinned versions
    assert "RAYDIFF_STORAGE=s3://" in _commands(config, "head_setup_commands")


def test_local_cluster_names_its_machines_and_shares_storage():
    raw = _load(LOCAL)
    assert raw["provider"]["type"] == "local"
    assert raw["provider"]["head_ip"] and raw["provider"]["worker_ips"]
    config = _validated(raw)
    assert config["max_workers"] == len(raw["provider"]["worker_ips"])
    assert "RAYDIFF_STORAGE=/shared/" in _commands(config, "head_setup_commands")
    head_start = _commands(config, "head_start_ray_commands")
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "raydiff server --host" in head_start and "--backend postgresql" in head_start


def test_local_cluster_carries_what_its_first_real_run_needed():
    """What `ray up cluster-local.yaml` on real hosts (tests/test_cluster_hosts.py) needed:
    autoscaler v1 (v2 never starts the local provider's workers), the head's address given,
    the token on every node, and nothing left running after `ray down`."""
    config = _validated(_load(LOCAL))
    head = _commands(config, "head_start_ray_commands")
    assert "RAY_enable_autoscaler_v2=0" in head and "--node-ip-address=" in head
    assert "RAY_AUTH_MODE=token" in _commands(config, "setup_commands")
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "scripts/while_ray.sh" in head                     # the server ends with Ray
    assert "scripts/while_ray.sh --head $RAY_HEAD_IP" in _commands(config, "worker_start_ray_commands")
    assert "/health" in head                                  # ray up waits for the server
    assert "pgrep -f 'mlflow server'" not in head              # it matched its own shell


def test_local_hosts_script_refuses_without_root():
    import os
    import subprocess
    script = REPO / "scripts" / "local_hosts.sh"
    run = ["bash", str(script), "up"]
    if os.geteuid() == 0:
        run = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + run
    done = subprocess.run(run, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "must run as root" in done.stderr


def test_a_retried_run_logs_no_epoch_twice(tmp_path):
    """A trial resumed from a checkpoint older than its last logged epoch trains the
    epochs in between again; they are not logged again (one point per metric and step)."""
    from raydiff.tune.trainable import PackConfigReport, TuneReport

    class Tracker:
        rows = []

        def log_metrics(self, run_id, rows):
            self.rows += rows

        def flush(self, run_id):
            pass

    logged = {"loss": 12, "acc": 10}          # what the attempt before the crash logged
    report = PackConfigReport(tmp_path / "m", tracker=Tracker(), run_id="r", logged=logged)
    for epoch in range(11, 15):               # resumed from the checkpoint at epoch 10
        report({"loss": 0.5, "acc": 0.9}, step=epoch)
    report.flush()
    assert sorted((k, step) for k, _, step, _ in report.tracker.rows) == [
        ("acc", 11), ("acc", 12), ("acc", 13), ("acc", 14), ("loss", 13), ("loss", 14)]
    single = TuneReport(tmp_path / "s", tracker=Tracker(), run_id="r", logged=logged)
    assert [k for k, _ in single._new({"loss": 0.5, "acc": 0.9}, 12)] == ["acc"]
    fresh = TuneReport(tmp_path / "f", tracker=Tracker(), run_id="r")
    assert [k for k, _ in fresh._new({"loss": 0.5}, 1)] == ["loss"]


def test_a_resumed_trial_takes_the_newest_readable_checkpoint_on_storage(tmp_path):
    """A checkpoint written after Tune's last state save (the driver died in between) is
    on the storage path but unknown to Tune: the trial takes the newest readable one."""
    import torch
    from ray.tune import Checkpoint

    from raydiff.tune.trainable import _load_first, _newer_checkpoints

    trial = tmp_path / "session" / "main" / "abc_00001_pack_of_2"
    for n, epoch in ((1, 150), (2, 300), (3, 450)):
        (trial / f"checkpoint_00000{n}").mkdir(parents=True)
        torch.save({"epoch": epoch}, trial / f"checkpoint_00000{n}" / "state.pt")
    (trial / "checkpoint_000004").mkdir()                  # the host died while writing it
    (trial / "checkpoint_000004" / "state.pt").write_bytes(b"\x80\x02trunc")
    (tmp_path / "session" / "main" / "abc_00002_other" / "checkpoint_000009").mkdir(parents=True)
    context = {"storage": str(tmp_path / "session"), "stage_dir": "main"}
    known = Checkpoint(str(trial / "checkpoint_000001"))    # what Tune's saved state knew

    newer = _newer_checkpoints(context, known, "abc_00001")
    assert [p.path.rsplit("_", 1)[1] for p in newer] == ["000004", "000003", "000002"]
    tags = {}
    assert _load_first(newer + [known], tags) == {"epoch": 450} and tags == {}
    assert _newer_checkpoints(context, None, "abc_00003") == []        # no folder: Tune's
    assert _newer_checkpoints({}, known, "abc_00001") == []
    assert _load_first([Checkpoint(str(trial / "checkpoint_000004"))], tags) is None
    assert "restarting from scratch" in tags["raydiff.checkpoint_error"]
