"""A sweep on a real two-node Ray cluster (a head and a worker started with `ray start` as
separate processes, each declaring one GPU) tracked by a real `mlflow server` over HTTP."""

import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import RAYDIFF
from procs import MlflowServer, RayCluster

pytestmark = pytest.mark.slow

TRIALS, EPOCHS = 8, 8
SWEEP = {"name": "cluster", "experiment": "train_classifier",
         # two trials per GPU, so 4 run at once on the two nodes and 8 come in two waves.
         # A trial lasts 16 s (epoch_seconds): Tune hands a pending trial to an actor that
         # has just finished on the head, even if that trial's own actor is still starting
         # on the worker, so trials shorter than a worker's cold start (a fresh Python
         # process importing torch) may all run on the head. Measured here: with 4 s trials
         # and 8 CPUs a node, 12 trials ran on the head alone (the worker's actors were not
         # ready within 10 s); with 4 CPUs a node the worker's first trial started 3 s
         # after the head's.
         "resources": {"cpu": 1, "gpu": 0.5},
         "config": {"dataset": "blobs", "noise_ratio": 0.2, "hidden": [16], "epochs": EPOCHS,
                    "checkpoint_every": 4, "epoch_seconds": 2,
                    "seed": {"grid": list(range(TRIALS))}}}


def max_overlap(intervals):
    """Most intervals (start, end) open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda x: (x[0], x[1]))
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def test_max_overlap():
    assert max_overlap([(0, 10), (1, 2), (3, 4), (3, 5)]) == 3
    assert max_overlap([(0, 1), (1, 2)]) == 1          # touching is not overlapping


@pytest.fixture
def cluster(tmp_path):
    server, nodes = MlflowServer(tmp_path / "mlflow"), RayCluster(tmp_path)
    try:
        server.start()
        # CPUs to spare, so that the GPU fractions are what limits how many trials run
        nodes.start_head(num_cpus=4, num_gpus=1)
        nodes.add_worker(num_cpus=4, num_gpus=1)
        nodes.node_ids = sorted(nodes.wait_for_nodes(2))
        yield server, nodes
    finally:
        nodes.stop()
        server.stop()


def test_sweep_spreads_over_both_nodes_and_logs_over_http(tmp_path, cluster):
    server, nodes = cluster
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SWEEP))
    done = subprocess.run(RAYDIFF + ["run", "s.yaml", "--address", nodes.address,
                                     "--tracking-uri", server.uri,
                                     "--storage-path", str(tmp_path / "ray_results")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=nodes.env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"main: {TRIALS} trials finished, 0 failed" in done.stdout

    client = MlflowClient(server.uri)                 # everything read back over HTTP
    exp = client.get_experiment_by_name("cluster")
    runs = client.search_runs([exp.experiment_id], "tags.`raydiff.kind` = 'trial'")
    assert len(runs) == TRIALS and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(int(r.data.params["seed"]) for r in runs) == list(range(TRIALS))

    placed = {}
    for run in runs:
        placed.setdefault(run.data.tags["raydiff.node_id"], []).append(
            (run.info.start_time, run.info.end_time))
    assert sorted(placed) == nodes.node_ids          # trials ran on the head and the worker
    per_node = {node: max_overlap(spans) for node, spans in placed.items()}
    overall = max_overlap([span for spans in placed.values() for span in spans])
    print(f"trials per node {[len(s) for s in placed.values()]}, most at once per node "
          f"{list(per_node.values())}, overall {overall}")
    assert max(per_node.values()) <= 2 and overall <= 4     # 2 per GPU, 2 GPUs

    for run in runs:
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")     # proxied by the server
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"per_sample.parquet"}
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert sorted(steps) == list(range(1, EPOCHS + 1))
        assert run.data.metrics["noise_auroc"] > 0.5
    stored = list((server.folder / "artifacts").rglob("per_sample.parquet"))
    assert len(stored) == TRIALS                      # the server holds every table
