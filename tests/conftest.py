import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# tiny models train faster on one thread than with OpenMP threads fighting over a shared CPU
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAYDIFF_TRACKING_RETRY_S", "30")
REPO = Path(__file__).resolve().parents[1]
RAYDIFF = [sys.executable, "-m", "raydiff.cli"]


@pytest.fixture
def one_thread():
    """Torch and the BLAS / OpenMP pools on one thread: tiny models run faster so than with
    threads fighting over a shared CPU (t-SNE's OpenMP threads included). Test modules
    take it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A clean working folder (the MLflow store and Ray results land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# Tests that start real processes (Ray, an MLflow server, the raydiff driver) run one after
# another on one pytest-xdist worker, as they did before the suite ran on two: they use
# both cores themselves and some pace their faults by the clock. The rest (single-threaded
# torch, see one_thread) share the other worker. Without xdist the mark does nothing.
REAL_PROCESS_MODULES = {"test_end_to_end", "test_faults", "test_graph", "test_ui", "test_cluster"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") or item.module.__name__ in REAL_PROCESS_MODULES:
            item.add_marker(pytest.mark.xdist_group("real_processes"))
