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


def toy_dataset(n=240, classes=4, dim=8, seed=0, spread=3.0):
    """``n`` samples of ``classes`` Gaussian clusters in ``dim`` dimensions (unit noise
    around centres drawn with std ``spread``), as a non-image Dataset."""
    import numpy as np

    from raydiff.data import Dataset

    rng = np.random.default_rng(seed)
    centers = rng.normal(0, spread, (classes, dim))
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.normal(0, 1.0, (n, dim))).astype(np.float32)
    return Dataset("toy", x, y.astype(np.int64), classes, np.array(["train"] * n),
                   is_image=False)
