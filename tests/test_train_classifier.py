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


def _weights(folder):
    return torch.load(folder / "checkpoint.pt", weights_only=True)["model"]


def test_shared_training_keys_take_effect(tmp_path, blobs):
    # weight decay: the same run with it ends with smaller weights
    tc.run(_config(epochs=10, weight_decay=0.0), Report(tmp_path / "plain"), blobs)
    tc.run(_config(epochs=10, weight_decay=0.05), Report(tmp_path / "wd"), blobs)

    def norm(state):
        return float(torch.sqrt(sum((v.float() ** 2).sum() for v in state.values())))

    assert norm(_weights(tmp_path / "wd")) < 0.8 * norm(_weights(tmp_path / "plain"))
    # the schedule: a milestone at 4 with gamma 0 freezes the model after epoch 4
    frozen = dict(lr_milestones=[4], lr_gamma=0.0, checkpoint_every=4)
    tc.run(_config(epochs=4, **frozen), Report(tmp_path / "four"), blobs)
    tc.run(_config(epochs=8, **frozen), Report(tmp_path / "eight"), blobs)
    tc.run(_config(epochs=8, checkpoint_every=4), Report(tmp_path / "free"), blobs)
    four, eight, free = (_weights(tmp_path / n) for n in ("four", "eight", "free"))
    assert all(torch.equal(four[k], eight[k]) for k in four)
    assert not all(torch.equal(four[k], free[k]) for k in four)


def test_augment_reaches_the_training_batches(tmp_path):
    from raydiff.data import Dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 1, 8, 8)).astype(np.uint8)
    data = Dataset("tiny", x, rng.integers(0, 2, 64).astype(np.int64), 2,
                   np.array(["train"] * 64))
    values = dict(dataset="blobs", model="simple_nn", hidden=[8], epochs=2, batch_size=16,
                  checkpoint_every=2, seed=1)
    for augment in (False, True):
        tc.run(build_config(tc.Config, {**values, "augment": augment}),
               Report(tmp_path / str(augment)), data)
    plain, augmented = _weights(tmp_path / "False"), _weights(tmp_path / "True")
    assert not all(torch.equal(plain[k], augmented[k]) for k in plain)
