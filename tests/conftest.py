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
def workdir(tmp_path, monkeypatch):
    """A clean working folder (the MLflow store and Ray results land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
