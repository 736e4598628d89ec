"""Every benchmark script still runs, at smoke sizes. No timing is asserted: the figures of
a smoke run mean nothing, only that each script gets to its summary line."""

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def _bench(name, *args, timeout=570):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--smoke",
                           *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_engine_vs_loop_smoke():
    out = _bench("engine_vs_loop")
    assert "summary: engine over loop" in out
    # full-batch: same initial weights, same batches -> the same logits every epoch
    gap = float(out.split("per-epoch logits, loop vs engine: max |diff| ")[1].split()[0])
    assert gap < 1e-4


def _packing_rows(out):
    """{count: (wall s, trials/hour, peak GiB per trial)} from gpu_packing's table rows."""
    rows = {}
    for count, wall, rate, peak in re.findall(
            r"^\s*(\d+) at once:\s+([\d.]+) s,\s+(\d+) trials/hour, peak ([\d.]+) GiB", out, re.M):
        rows[int(count)] = (float(wall), float(rate), float(peak))
    return rows


def test_gpu_packing_smoke_runs_or_says_why_not():
    out = _bench("gpu_packing")
    import torch
    if torch.cuda.is_available():
        rows = _packing_rows(out)
        assert set(rows) == {1, 2} and all(w > 0 and r > 0 and p > 0 for w, r, p in rows.values())
    else:
        # it says why and measures nothing it could mistake for a GPU figure
        assert "summary: skipped, no CUDA device" in out and not _packing_rows(out)


def _cuda_path_runs_or_says_why_not(name, summary):
    """``name --device cuda`` at smoke size: its ``summary`` line on a CUDA machine, else
    the line saying it skipped."""
    import torch

    out = _bench(name, "--device", "cuda")
    assert (summary if torch.cuda.is_available() else "skipped, no CUDA device") in out


def test_pack_throughput_smoke_and_its_cuda_path_runs_or_says_why_not():
    out = _bench("pack_throughput")
    assert "summary: pack over single engine" in out and "K=    4" in out
    _cuda_path_runs_or_says_why_not("pack_throughput", "summary: pack over single engine")


def test_models_per_hour_smoke_and_its_cuda_path_runs_or_says_why_not():
    out = _bench("models_per_hour", "--device", "cpu")
    assert "per trial, 2 processes" in out and "packed, K=16" in out
    assert "summary: packed over per-trial models per hour on cpu" in out
    _cuda_path_runs_or_says_why_not("models_per_hour",
                                    "summary: packed over per-trial models per hour on cuda")


def test_vog_pass_smoke_scores_agree_with_the_stored_maps():
    out = _bench("vog_pass")
    assert "scores agree with the stored maps" in out and "summary: VoG pass" in out


def test_eval_passes_smoke_shared_passes_change_no_number():
    out = _bench("eval_passes")
    assert "max |diff| 0.0e+00 over" in out and "summary: shared over separate" in out


# the rest start a local Ray (and MLflow): tens of seconds each even at smoke size

@pytest.mark.slow
def test_memory_smoke_shared_dataset_is_stored_once():
    out = _bench("memory")
    assert "shared dataset stored once" in out


@pytest.mark.slow
def test_overhead_smoke():
    out = _bench("overhead")
    ray_start = float(re.search(r"ray\.init: ([\d.]+) s", out).group(1))
    per_trial, inside = map(float, re.search(
        r"per trial: (-?[\d.]+) s wall, of which ([\d.]+) s inside", out).groups())
    mlflow_s = float(re.search(r"timed alone: ([\d.]+) s", out).group(1))
    bookkeeping = float(re.search(r"summary: bookkeeping (-?[\d.]+) s per trial", out).group(1))
    assert ray_start > 0 and inside > 0 and mlflow_s > 0
    # the summary is the per-trial wall less the experiment's own time, as printed
    assert bookkeeping == pytest.approx(per_trial - inside, abs=0.011)


@pytest.mark.slow
def test_grid_throughput_smoke():
    out = _bench("grid_throughput", timeout=600)
    assert "summary: Ray" in out and "stage reuse" in out


@pytest.mark.slow
def test_gpu_packing_runs_its_trial_processes_on_cpu():
    out = _bench("gpu_packing", "--device", "cpu", "--workloads", "simple_nn")
    rows = _packing_rows(out)
    assert set(rows) == {1, 2}
    assert all(wall > 0 and rate > 0 and peak > 0 for wall, rate, peak in rows.values())
    # the advice names the count with the highest rate, as a share of the device
    best = max(rows, key=lambda count: rows[count][1])
    assert f"simple_nn: gpu {1 / best:g} ({best} per card" in out


def test_stage_schedule_sim_smoke_graph_never_slower_with_slots_to_spare():
    out = _bench("stage_schedule_sim", "--slots", "2", "512")
    assert "synthetic session shaped like" in out and "summary: graph over series makespan" in out
    # with a slot for every trial, the graph's makespan is its critical path, which the
    # series makespan (the sum of every stage's longest trial along the file) never beats
    ratio = float(out.split("N=512 ")[1].split("x")[0])
    assert ratio >= 1.0


@pytest.mark.slow
def test_stage_graph_smoke():
    out = _bench("stage_graph", timeout=600)
    assert "series:" in out and "graph:" in out and "summary: graph over series wall time" in out
