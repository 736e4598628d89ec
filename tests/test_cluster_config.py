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
    assert "raydiff server --host 0.0.0.0" in head_start and "--backend postgresql" in head_start
    assert "--artifacts-destination /shared/" in head_start
