"""The checkpointed baseline: a run cut short and resumed from its last checkpoint ends
exactly where an uninterrupted run ends, and its loss score finds the flipped labels."""

import time

import numpy as np
import pandas as pd
import pytest
import torch

from raydiff.data import load_dataset
from raydiff.experiments import get_experiment
from raydiff.experiments.base import Report
from raydiff.experiments.config import build_config

tc = get_experiment("train_classifier")


class Killed(Exception):
    pass


class DiesAt(Report):
    """A Report whose process 'dies' when epoch ``at`` reports."""

    def __init__(self, folder, at, **kw):
        super().__init__(folder, **kw)
        self.at = at

    def _emit(self, metrics, step, checkpoint):
        if step == self.at:
            raise Killed


@pytest.fixture(scope="module")
def blobs():
    return load_dataset("blobs")


def _config(**kw):
    values = dict(dataset="blobs", noise_ratio=0.2, hidden=[16], epochs=30, lr=0.05,
                  batch_size=64, checkpoint_every=10, seed=3)
    return build_config(tc.Config, {**values, **kw})


def test_resumed_run_equals_uninterrupted_and_flags_noise(tmp_path, blobs):
    config = _config()
    whole = Report(tmp_path / "whole")
    metrics = tc.run(config, whole, blobs)
    table = pd.read_parquet(tmp_path / "whole" / "per_sample.parquet")
    assert metrics["start_epoch"] == 0 and metrics["epochs_run"] == 30
    assert metrics["noise_auroc"] > 0.8                     # flipped labels keep a high loss
    assert table["hard"].sum() == 100 and table["is_noisy"].sum() == 100

    cut = DiesAt(tmp_path / "cut", at=17)
    with pytest.raises(Killed):
        tc.run(config, cut, blobs)
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 10                               # the last checkpoint before 17
    resumed = Report(tmp_path / "resumed", resume_state=state)
    again = tc.run(config, resumed, blobs)
    assert again["start_epoch"] == 10 and again["epochs_run"] == 20
    assert resumed.tags["raydiff.resumed_from_epoch"] == "10"
    assert [s for s, _ in resumed.history[:-1]] == list(range(11, 31))
    other = pd.read_parquet(tmp_path / "resumed" / "per_sample.parquet")
    np.testing.assert_array_equal(other["score"].to_numpy(), table["score"].to_numpy())
    assert again["train_accuracy"] == metrics["train_accuracy"]


def test_epoch_seconds_paces_the_run(tmp_path, blobs):
    started = time.monotonic()
    tc.run(_config(epochs=4, epoch_seconds=0.3, checkpoint_every=2), Report(tmp_path), blobs)
    assert time.monotonic() - started >= 1.2
