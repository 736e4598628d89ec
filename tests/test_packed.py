"""Packs: K SimpleNNs trained as one computation give, model by model, what the single
engine gives the same config (init, labels, subset, shuffles, rate, decay, momentum); the
batched radii equal the single ones; a diverging model is masked out without touching the
rest; unstack / stack round-trips."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raydiff.data import load_dataset, prepare
from raydiff.engine import predict, train
from raydiff.engine.inversion import InversionMonitor, class_radii
from raydiff.engine.packed import (Pack, PackedInversionMonitor, class_radii_packed,
                                   predict_packed, train_packed)
from raydiff.models import get_model

N = 400
SEEDS = [3, 11, 27, 40]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return prepare(load_dataset("mnist5k"), subset_size=N, subset_seed=0)


def configs(y):
    """Four models that differ in everything a pack lets differ: seed, labels (a planted
    noise draw per model), subset (all, a sorted ratio, a shuffled-order subset, a small
    one), learning rate, weight decay."""
    rng = np.random.default_rng(0)
    noisy = y.clone()
    flip = torch.as_tensor(rng.random(N) < 0.3)
    noisy[flip] = torch.as_tensor(rng.integers(0, 10, int(flip.sum())))
    labels = torch.stack([y, noisy, y, (y + 1) % 10])
    subsets = [None, np.sort(rng.choice(N, 300, replace=False)), rng.permutation(N)[:250],
               np.sort(rng.choice(N, 90, replace=False))]
    return labels, subsets, [0.1, 0.05, 0.2, 0.1], [0.0, 1e-3, 0.0, 5e-3]


def alone(x, y, subset, *, seed, gen_seed, **kw):
    """The same config through the single-model engine: returns (model, result)."""
    idx = torch.arange(len(x)) if subset is None else torch.as_tensor(subset)
    model = get_model("simple_nn", input_shape=x.shape[1:], num_classes=10, seed=seed)
    result = train(model, x[idx], y[idx], generator=torch.Generator().manual_seed(gen_seed),
                   record_every=1, **kw)
    return model, result, idx


@pytest.mark.parametrize("batch_size, epochs, momentum", [(None, 20, 0.0), (64, 3, 0.0),
                                                          (64, 3, 0.9)])
def test_a_packed_model_equals_the_same_config_trained_alone(data, batch_size, epochs, momentum):
    labels, subsets, lrs, wds = configs(data.y)
    pack = Pack.init(SEEDS, input_shape=data.x.shape[1:], num_classes=10)
    gens = [torch.Generator().manual_seed(1000 + s) for s in SEEDS]
    got = train_packed(pack, data.x, labels, epochs=epochs, lr=lrs, weight_decay=wds,
                       momentum=momentum, batch_size=batch_size, subsets=subsets,
                       generators=gens, record_every=1)
    assert got.dynamics.logits.shape == (epochs, len(SEEDS), N, 10)
    for k, seed in enumerate(SEEDS):
        model, want, idx = alone(data.x, labels[k], subsets[k], seed=seed, gen_seed=1000 + seed,
                                 epochs=epochs, lr=lrs[k], weight_decay=wds[k],
                                 momentum=momentum, batch_size=batch_size)
        # every epoch's training-pass logits of the model's own samples, its losses, and
        # the final weights' logits on every sample
        np.testing.assert_allclose(got.dynamics.of(k, idx.numpy()).logits, want.dynamics.logits,
                                   atol=1e-4, rtol=0)
        np.testing.assert_allclose(got.losses[:, k], want.losses, atol=1e-5)
        torch.testing.assert_close(pack.model(k)(data.x), predict(model, data.x),
                                   atol=1e-4, rtol=0)
    assert not got.diverged
    # the models did train: different from their initial logits, loss falling
    assert (got.losses[-1] < got.losses[0]).all()
    if batch_size is not None:
        # mini-batch: a model's rows outside its subset were never seen in training
        out = np.setdiff1d(np.arange(N), subsets[3])
        assert np.isnan(got.dynamics.logits[:, 3, out]).all()


def test_predict_packed_and_unstack_stack_round_trip(data):
    models = [get_model("simple_nn", input_shape=data.x.shape[1:], num_classes=10, seed=s,
                        hidden=(20,)) for s in SEEDS]
    pack = Pack.from_models(models)
    assert (pack.k, pack.in_features, pack.hidden, pack.num_classes) == (4, 784, (20,), 10)
    logits = predict_packed(pack, data.x, batch_size=128)          # several batches
    for k, m in enumerate(models):
        torch.testing.assert_close(logits[k], predict(m, data.x), atol=1e-5, rtol=0)
        again = pack.model(k)
        assert type(again) is type(m)
        for (name, a), (_, b) in zip(m.state_dict().items(), again.state_dict().items()):
            assert torch.equal(a, b), name
    # stack(unstack(pack)) is the pack; the unstacked models are copies
    back = Pack.from_models([pack.model(k) for k in range(pack.k)])
    assert all(torch.equal(a, b) for a, b in zip(back.params, pack.params))
    pack.model(0).out.bias.data.add_(1.0)
    assert torch.equal(pack.biases[-1][0], models[0].out.bias.detach())
    flat = pack.flat()
    other = Pack.init([0, 1, 2, 3], input_shape=data.x.shape[1:], num_classes=10, hidden=(20,))
    other.load_flat(flat)
    assert all(torch.equal(a, b) for a, b in zip(other.params, pack.params))
    # the pack of init() is the single engine's initialisation, seed by seed
    single = get_model("simple_nn", input_shape=data.x.shape[1:], num_classes=10, seed=SEEDS[2])
    packed = Pack.init(SEEDS, input_shape=data.x.shape[1:], num_classes=10).model(2)
    assert all(torch.equal(a, b) for a, b in zip(single.parameters(), packed.parameters()))


def test_mixed_architectures_and_bad_settings_are_refused(data):
    a = get_model("simple_nn", input_shape=(784,), num_classes=10, seed=0)
    b = get_model("simple_nn", input_shape=(784,), num_classes=10, seed=0, hidden=(20,))
    with pytest.raises(ValueError, match="one architecture"):
        Pack.from_models([a, b])
    pack = Pack.from_models([a, a])
    with pytest.raises(ValueError, match="lr"):
        train_packed(pack, data.x, data.y, epochs=1, lr=[0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="generators"):
        train_packed(pack, data.x, data.y, epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="subsets"):
        train_packed(pack, data.x, data.y, epochs=1, subsets=[None])


def test_batched_radii_equal_the_single_radii_per_model(data):
    labels, subsets, _, _ = configs(data.y)
    pack = Pack.init(SEEDS, input_shape=data.x.shape[1:], num_classes=10)
    z, _ = pack.features_and_logits(data.x)
    weight = torch.zeros(len(SEEDS), N)
    for k, s in enumerate(subsets):
        weight[k, torch.as_tensor(s) if s is not None else slice(None)] = 1
    # a model whose subset lacks class 9 entirely gets NaN there, as the single one does
    weight[3, labels[3] == 9] = 0
    radii, centroids = class_radii_packed(z, labels, 10, weight)
    for k in range(len(SEEDS)):
        m = weight[k] > 0
        want_r, want_c = class_radii(pack.model(k).features(data.x[m]), labels[k][m], 10)
        torch.testing.assert_close(radii[k], want_r, atol=1e-6, rtol=1e-5, equal_nan=True)
        torch.testing.assert_close(centroids[k], want_c, atol=1e-6, rtol=1e-5, equal_nan=True)
    assert torch.isnan(radii[3, 9]) and not torch.isnan(radii[:3]).any()


@pytest.mark.parametrize("rule", ["minimum", "first_rise"])
def test_packed_monitor_finds_what_the_single_monitor_finds(data, rule):
    """One pack trained full-batch, watched by the packed monitor and, model by model, by
    a single monitor whose model is given the unstacked weights after every epoch (the
    same trajectory, so the comparison is of the monitors): same radius history, inversion
    epochs, snapshot weights, straggler margins and learned epochs; model 1 on a subset."""
    epochs, start, lr = 100, 5, 1.0          # at this rate some classes invert, some not
    subsets = [None, np.sort(np.random.default_rng(1).choice(N, 300, replace=False))]
    seeds = [5, 6]
    pack = Pack.init(seeds, input_shape=data.x.shape[1:], num_classes=10)
    monitor = PackedInversionMonitor(pack, data.x, data.y, 10, subsets=subsets, start=start,
                                     check_every=5, rule=rule, track_learning=True)
    idx = [torch.arange(N) if s is None else torch.as_tensor(s) for s in subsets]
    singles = [InversionMonitor(pack.model(k), data.x[idx[k]], data.y[idx[k]], 10,
                                start=start, check_every=5, rule=rule, track_learning=True)
               for k in range(2)]

    def on_epoch(epoch, losses):
        monitor(epoch, losses)
        for k, single in enumerate(singles):
            single.model.load_state_dict(pack.state_of(k))
            single(epoch)

    train_packed(pack, data.x, data.y, epochs=epochs, lr=lr, subsets=subsets, on_epoch=on_epoch)
    for k, single in enumerate(singles):
        view = monitor.view(k)
        e1, r1 = single.radius_history()
        e2, r2 = view.radius_history()
        assert list(e1) == list(e2) == list(range(start, epochs + 1))
        np.testing.assert_allclose(r2, r1, atol=1e-6)
        np.testing.assert_allclose(view.centroid_distances(), single.centroid_distances(),
                                   atol=1e-5)
        assert view.inversion == single.inversion
        assert view.inversion
        assert view.never_inverted() == single.never_inverted()
        for c, state in single.snapshots.items():
            for name, t in state.items():
                assert torch.equal(view.snapshots[c][name], t), (c, name)
        s1, j1 = single.straggler_margin()
        s2, j2 = view.straggler_margin()
        np.testing.assert_allclose(s2, s1, atol=1e-5)
        assert (j1 == j2).all() and j1.any() and j1.all() == (not view.never_inverted())
        assert (view.learned_epoch() == single.learned_epoch()).all()
    if rule == "minimum":       # both kinds of class were compared: inverted and not
        assert any(monitor.never_inverted(k) for k in range(2))


@pytest.mark.parametrize("batch_size", [None, 64])
def test_a_diverging_model_is_masked_out_and_the_rest_are_untouched(data, batch_size):
    seeds = [1, 2, 3]
    # model 1: a rate that overflows float32 within a few steps (tanh bounds the hidden
    # layers, so a merely large rate only makes the loss large, never NaN)
    lrs = [0.1, 1e37, 0.2]
    epochs = 6 if batch_size is None else 2

    def run(keep):
        pack = Pack.init([seeds[i] for i in keep], input_shape=data.x.shape[1:],
                         num_classes=10)
        gens = [torch.Generator().manual_seed(seeds[i]) for i in keep]
        result = train_packed(pack, data.x, data.y, epochs=epochs,
                              lr=[lrs[i] for i in keep], batch_size=batch_size,
                              generators=gens, record_every=1)
        return pack, result

    pack, result = run([0, 1, 2])
    assert set(result.diverged) == {1} and 1 <= result.diverged[1] <= epochs
    assert np.isnan(result.losses[result.diverged[1] - 1:, 1]).all()
    frozen = pack.flat()[1].clone()
    # the masked model's parameters no longer change: a further epoch leaves them alone
    more = train_packed(pack, data.x, data.y, epochs=epochs + 1, start_epoch=epochs, lr=lrs,
                        batch_size=batch_size, state=result.state)
    assert more.diverged == result.diverged and np.isnan(more.losses[:, 1]).all()
    assert torch.equal(torch.nan_to_num(pack.flat()[1], nan=7.0),
                       torch.nan_to_num(frozen, nan=7.0))
    if batch_size is None:
        # full batch: the step whose loss was not finite and every later one were skipped,
        # so the model holds the weights it had after epoch d - 1 (inf, never NaN)
        d = result.diverged[1]
        early = Pack.init([seeds[1]], input_shape=data.x.shape[1:], num_classes=10)
        if d > 1:
            train_packed(early, data.x, data.y, epochs=d - 1, lr=lrs[1])
        assert torch.equal(pack.flat()[1], early.flat()[0])
        assert not torch.isnan(frozen).any()
    # ... and the others train exactly as in a pack without it
    pack2, result2 = run([0, 2])
    assert not result2.diverged
    np.testing.assert_allclose(result.dynamics.logits[:, [0, 2]], result2.dynamics.logits,
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(result.losses[:, [0, 2]], result2.losses, atol=1e-6)


def test_on_epoch_can_stop_single_models(data):
    pack = Pack.init([0, 1], input_shape=data.x.shape[1:], num_classes=10)
    seen = []

    def on_epoch(epoch, losses):
        seen.append(losses.copy())
        return np.array([epoch >= 2, False])

    result = train_packed(pack, data.x, data.y, epochs=4, lr=0.1, on_epoch=on_epoch)
    assert result.stopped == {0: 2} and not result.diverged
    assert np.isnan(result.losses[2:, 0]).all() and np.isfinite(result.losses[:, 1]).all()
    # model 0 stopped after 2 epochs: it is what 2 epochs alone give
    model = get_model("simple_nn", input_shape=data.x.shape[1:], num_classes=10, seed=0)
    train(model, data.x, data.y, epochs=2, lr=0.1)
    torch.testing.assert_close(pack.model(0)(data.x), predict(model, data.x), atol=1e-4, rtol=0)


def test_a_resumed_pack_continues_exactly(data):
    """2 epochs, the pack and its state saved (state_dict), 1 more epoch from the saved
    copies = 3 epochs straight: momentum buffers and shuffle generators carry over."""
    seeds = [0, 1, 2]
    kw = dict(lr=[0.05, 0.1, 0.02], momentum=0.9, weight_decay=1e-3, batch_size=64)

    def fresh():
        return (Pack.init(seeds, input_shape=data.x.shape[1:], num_classes=10),
                [torch.Generator().manual_seed(s) for s in seeds])

    straight, gens = fresh()
    train_packed(straight, data.x, data.y, epochs=3, generators=gens, **kw)
    first, gens = fresh()
    result = train_packed(first, data.x, data.y, epochs=2, generators=gens, **kw)
    saved_pack, saved_state = first.state_dict(), result.state.state_dict()
    resumed, gens = fresh()                    # new objects, as after a restart
    resumed.load_state_dict(saved_pack)
    from raydiff.engine.packed import PackOptimizerState
    state = PackOptimizerState(resumed, gens)
    state.load_state_dict(saved_state)
    train_packed(resumed, data.x, data.y, epochs=3, start_epoch=2, state=state, **kw)
    assert all(torch.equal(a, b) for a, b in zip(resumed.params, straight.params))


def test_small_subsets_train_gathered_and_equal_the_single_engine(data, monkeypatch):
    """Full batch on subsets well under N (imbalance's hard-only and reduced cells): each
    model's rows are gathered (K x n_max rows a step, not K x N masked) and the models
    still equal the single engine on their subsets. (On a GPU; on the CPU such packs train
    one by one, see the next test, so that path is switched off here.)"""
    from raydiff.engine import pack_train

    monkeypatch.setattr(pack_train, "one_by_one_pays", lambda rows, n: False)
    labels, _, lrs, wds = configs(data.y)
    rng = np.random.default_rng(1)
    width = int(pack_train.GATHER_BELOW * N)
    small = [np.sort(rng.choice(N, width, replace=False)), rng.permutation(N)[:width - 10],
             np.sort(rng.choice(N, width - 30, replace=False)), rng.permutation(N)[:40]]
    sizes = np.array([len(s) for s in small])
    assert pack_train._gathered_batch(small, sizes, labels, "cpu", N) is not None   # the path taken
    pack = Pack.init(SEEDS, input_shape=data.x.shape[1:], num_classes=10)
    got = train_packed(pack, data.x, labels, epochs=20, lr=lrs, weight_decay=wds, subsets=small)
    for k, seed in enumerate(SEEDS):
        model, want, _ = alone(data.x, labels[k], small[k], seed=seed, gen_seed=0, epochs=20,
                               lr=lrs[k], weight_decay=wds[k])
        np.testing.assert_allclose(got.losses[:, k], want.losses, atol=1e-5)
        torch.testing.assert_close(pack.model(k)(data.x), predict(model, data.x),
                                   atol=1e-4, rtol=0)


def test_small_subsets_on_the_cpu_train_one_by_one_exactly_as_alone(data, monkeypatch):
    """Full batch on the CPU, subsets small enough for one-by-one to pay: every model is
    exactly (bit for bit) the single engine's model on its rows, whatever labels, rate,
    decay and schedule it has; an empty subset leaves its model untouched; a diverging
    model is reported as the stacked path reports it, and the others are unaffected."""
    from raydiff.engine import pack_train

    labels, _, lrs, wds = configs(data.y)
    rng = np.random.default_rng(2)
    subsets = [np.sort(rng.choice(N, N // 2, replace=False)), rng.permutation(N)[:N // 3],
               np.array([], dtype=np.int64), rng.permutation(N)[:N // 4]]
    lrs = [lrs[0], 1e37, lrs[2], lrs[3]]           # model 1 overflows within a few steps

    def schedule(epoch):
        return [r * (0.1 if epoch > 5 else 1.0) for r in lrs]

    # the cost model: on mnist5k's 5000 rows small subsets pay, near-whole ones do not;
    # on 500 rows fixed costs make stacking pay at every share
    assert pack_train.one_by_one_pays(1000, 5000) and pack_train.one_by_one_pays(2500, 5000)
    assert not pack_train.one_by_one_pays(4500, 5000) and not pack_train.one_by_one_pays(100, 500)
    monkeypatch.setattr(pack_train, "one_by_one_pays", lambda rows, n: True)
    pack = Pack.init(SEEDS, input_shape=data.x.shape[1:], num_classes=10)
    start = pack.flat().clone()
    calls = []
    real = pack_train._train_one_by_one
    monkeypatch.setattr(pack_train, "_train_one_by_one",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    got = train_packed(pack, data.x, labels, epochs=8, lr=lrs, weight_decay=wds,
                       subsets=subsets, lr_schedule=schedule)
    assert calls                                                    # the path taken
    for k in (0, 3):
        model, want, _ = alone(data.x, labels[k], subsets[k], seed=SEEDS[k], gen_seed=0,
                               epochs=8, weight_decay=wds[k],
                               lr_schedule=lambda e, k=k: schedule(e)[k])
        assert got.losses[:, k].tolist() == want.losses
        assert all(torch.equal(a, b) for a, b in zip(pack.state_of(k).values(),
                                                     model.state_dict().values()))
    assert torch.equal(pack.flat()[2], start[2]) and np.isnan(got.losses[:, 2]).all()
    # in two chunks (as a checkpointed pack trains): the same models, bit for bit
    chunked = Pack.init(SEEDS, input_shape=data.x.shape[1:], num_classes=10)
    first = train_packed(chunked, data.x, labels, epochs=4, lr=lrs, weight_decay=wds,
                         subsets=subsets, lr_schedule=schedule)
    rest = train_packed(chunked, data.x, labels, epochs=8, start_epoch=4, lr=lrs,
                        weight_decay=wds, subsets=subsets, lr_schedule=schedule,
                        state=first.state)
    assert rest.losses.shape == (4, len(SEEDS))
    for k in (0, 3):
        assert torch.equal(chunked.flat()[k], pack.flat()[k])
        assert np.concatenate([first.losses[:, k], rest.losses[:, k]]).tolist() == \
            got.losses[:, k].tolist()
    assert set(got.diverged) == {1} and np.isnan(got.losses[got.diverged[1] - 1:, 1]).all()
    assert not bool(got.state.live[1]) and bool(got.state.live[0])
    # the stacked path on the same pack gives the same models up to float rounding
    monkeypatch.setattr(pack_train, "one_by_one_pays", lambda rows, n: False)
    stacked = Pack.init(SEEDS, input_shape=data.x.shape[1:], num_classes=10)
    again = train_packed(stacked, data.x, labels, epochs=8, lr=lrs, weight_decay=wds,
                         subsets=subsets, lr_schedule=schedule)
    assert len(calls) == 3 and set(again.diverged) == {1}     # not the stacked run
    for k in (0, 3):
        torch.testing.assert_close(stacked.model(k)(data.x), pack.model(k)(data.x),
                                   atol=1e-4, rtol=0)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("batch_size, momentum", [(None, 0.0), (64, 0.9)])
def test_a_checkpointed_pack_killed_and_restored_ends_where_one_straight_run_ends(
        data, tmp_path, batch_size, momentum):
    """2N epochs in one go = N epochs, the pack's checkpoint saved and the process "killed",
    fresh objects restored from it and N more: parameters, losses, recorded logits and the
    experiment's kept state all equal (mini-batch with momentum: the buffers and each
    model's shuffle generator carry over). The resumed members are tagged."""
    from raydiff.experiments._packs import train_checkpointed
    from raydiff.experiments.base import PackCheckpoint, Report

    labels, subsets, lrs, wds = configs(data.y)
    half = 3 if batch_size else 6
    kw = dict(epochs=2 * half, lr=lrs, weight_decay=wds, momentum=momentum,
              batch_size=batch_size, subsets=subsets, record_every=1)

    def fresh(folder, resume_state=None, die_at=None):
        pack = Pack.init(SEEDS, input_shape=data.x.shape[1:], num_classes=10)
        gens = [torch.Generator().manual_seed(1000 + s) for s in SEEDS]
        reports = [Report(tmp_path / folder / f"r{k}") for k in range(len(SEEDS))]
        ckpt = PackCheckpoint(tmp_path / folder, resume_state=resume_state)
        for r in reports:
            r.pack_checkpoint = ckpt
        kept = {"seen": []}

        def on_epoch(epoch, losses):
            if epoch == die_at:
                raise _Killed(epoch)
            kept["seen"].append(torch.as_tensor(losses))
        return pack, gens, reports, ckpt, kept, on_epoch

    one_go, gens, reports, ckpt, kept, hook = fresh("straight")
    straight = train_checkpointed(one_go, data.x, labels, reports=reports, every=half,
                                  generators=gens, kept=kept, on_epoch=hook, **kw)
    assert ckpt.saved == [half, 2 * half] and straight.start_epoch == 0

    pack, gens, reports, ckpt, kept_killed, hook = fresh("killed", die_at=half + 1)
    with pytest.raises(_Killed):
        train_checkpointed(pack, data.x, labels, reports=reports, every=half,
                           generators=gens, kept=kept_killed, on_epoch=hook, **kw)
    assert ckpt.saved == [half]
    again, gens, reports, _, kept_again, hook = fresh("resumed", resume_state=ckpt.load())
    resumed = train_checkpointed(again, data.x, labels, reports=reports, every=half,
                                 generators=gens, kept=kept_again, on_epoch=hook, **kw)
    assert resumed.start_epoch == half and resumed.epochs_run == 2 * half
    assert all(r.tags["raydiff.resumed_from_epoch"] == str(half) for r in reports)
    assert all(torch.equal(a, b) for a, b in zip(again.params, one_go.params))
    np.testing.assert_array_equal(resumed.losses, straight.losses)
    np.testing.assert_array_equal(resumed.dynamics.epochs, np.arange(1, 2 * half + 1))
    np.testing.assert_array_equal(resumed.dynamics.logits, straight.dynamics.logits)
    assert len(kept_again["seen"]) == 2 * half
    assert all(torch.equal(a, b) for a, b in zip(kept_again["seen"], kept["seen"]))
    # the restored state is what made them equal: the killed pack had moved on from its
    # start, and a pack restored without its optimizer state would not match
    assert not torch.equal(again.params[0], Pack.init(SEEDS, input_shape=data.x.shape[1:],
                                                      num_classes=10).params[0])


def test_a_pack_checkpoint_of_another_pack_is_not_loaded(data, tmp_path):
    """A checkpoint saved for another number of models starts the pack over, saying why."""
    from raydiff.experiments._packs import train_checkpointed
    from raydiff.experiments.base import PackCheckpoint, Report

    def run(k, folder, resume_state=None):
        pack = Pack.init(SEEDS[:k], input_shape=data.x.shape[1:], num_classes=10)
        report = Report(tmp_path / folder / "r")
        report.pack_checkpoint = PackCheckpoint(tmp_path / folder, resume_state=resume_state)
        return pack, report, train_checkpointed(pack, data.x, data.y, epochs=4, lr=0.1,
                                                reports=[report], every=2)

    _, first, _ = run(3, "three")
    pack, report, result = run(2, "two", resume_state=first.pack_checkpoint.load())
    assert result.start_epoch == 0 and "raydiff.resumed_from_epoch" not in report.tags
    assert "saved for 3 models, this pack has 2" in report.tags["raydiff.checkpoint_error"]
    plain = Pack.init(SEEDS[:2], input_shape=data.x.shape[1:], num_classes=10)
    train_packed(plain, data.x, data.y, epochs=4, lr=0.1)
    assert all(torch.equal(a, b) for a, b in zip(pack.params, plain.params))


def test_the_hand_written_backward_equals_torch_func(data):
    """The pack's SimpleNN gradients (shared rows with per-sample weights, and per-model
    batches) equal those of torch.func's vmap(grad) over the stacked models."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    from raydiff.engine.pack_step import cross_entropy_grad, simple_nn_grads

    models = [get_model("simple_nn", input_shape=data.x.shape[1:], num_classes=10,
                        hidden=(20, 12), seed=s) for s in SEEDS]
    pack = Pack.from_models(models)
    params, _ = stack_module_state(models)
    skeleton = models[0]
    k, x = len(SEEDS), data.x.flatten(1)
    labels, _, _, _ = configs(data.y)
    weights = torch.rand(k, N, generator=torch.Generator().manual_seed(0))
    weights[2, :300] = 0                                 # a model on part of the rows

    def loss(p, xb, yb, wb):
        nll = F.cross_entropy(functional_call(skeleton, p, (xb,)), yb, reduction="none")
        return (nll * wb).sum() / wb.sum()

    idx = torch.randint(0, N, (k, 64), generator=torch.Generator().manual_seed(1))
    for xb, yb, wb, shared in ((x, labels, weights, True),
                               (x[idx], labels.gather(1, idx), torch.ones(k, 64), False)):
        want = vmap(grad(loss), in_dims=(0, None if shared else 0, 0, 0))(params, xb, yb, wb)
        acts, logits = pack.activations(xb, per_model=not shared)
        _, grad_logits = cross_entropy_grad(logits, yb, wb.sum(1), wb)
        got = simple_nn_grads(pack, xb, acts, grad_logits, shared=shared)
        assert len(got) == len(want)
        for g, name in zip(got, want):
            torch.testing.assert_close(g, want[name], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_pack_of_one_is_the_single_engine_bit_for_bit(data, momentum):
    """Full batch, one model: train_packed and train run the same step (one backward, one
    update), so parameters and losses are equal to the bit, decay and schedule included."""
    kw = dict(epochs=6, lr=0.3, weight_decay=1e-3, momentum=momentum,
              lr_schedule=lambda e: 0.3 / e)
    pack = Pack.init([5], input_shape=data.x.shape[1:], num_classes=10)
    got = train_packed(pack, data.x, data.y, **kw)
    model = get_model("simple_nn", input_shape=data.x.shape[1:], num_classes=10, seed=5)
    want = train(model, data.x, data.y, **kw)
    assert got.losses[:, 0].tolist() == want.losses
    assert all(torch.equal(a, b) for a, b in zip(pack.state_of(0).values(),
                                                 model.state_dict().values()))
