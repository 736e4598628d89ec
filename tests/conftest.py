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
