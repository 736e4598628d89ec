"""raydiff's training engine against the seed projects' DataLoader loop, SimpleNN on mnist5k.

Both sides train the same SimpleNN (same initial weights) on the same normalised digits
for the same epochs with plain SGD, and after every epoch score all samples (the logits
of every sample, the per-sample dynamics the experiments are built on):

- loop: the seed scripts' way, ``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)``,
  ``zero_grad / backward / optimizer.step`` per batch, then an eval-mode no-grad pass over a
  second DataLoader over all samples (one batch size for both loaders, as the seeds do);
- engine: :func:`raydiff.engine.train` over the tensors, with :func:`raydiff.engine.predict`
  (large no-grad batches) after every epoch; ``engine, in-pass`` instead keeps the logits
  every sample got in its training forward pass (``record_every=1``, no second pass), which
  is what the identify experiment does; ``engine, optimiser`` is the engine driving a
  ``torch.optim.SGD`` object (its code path before the plain-SGD step).

Full-batch (the whole training set is one batch, the benchmark's setting) and mini-batch
(64) modes; the speed ratio is loop time / engine time, measured alternately in this
process, in CPU seconds (everything runs on one thread, so on a shared machine this is the
robust clock) and in wall seconds. Final accuracies (held-out and training) of the loop and the engine must agree:
exactly up to float rounding in full-batch mode, within shuffling noise in mini-batch mode
(the two shuffle with different random streams).

    python benchmarks/engine_vs_loop.py [--smoke] [--repeats 3] [--epochs-full 200]
                                        [--epochs-mini 10] [--batch-size 64]
"""

import sys

import _common
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from raydiff.data import load_dataset, prepare
from raydiff.engine import accuracy, predict, train
from raydiff.models import get_model

LR = 0.1


def load(n_samples, n_test):
    data = prepare(load_dataset("mnist5k"), subset_size=n_samples, subset_seed=0)
    # mnist5k is sorted by class: hold out a random share
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    x, y = data.x[order], data.y[order]
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def new_model(x, seed=0):
    return get_model("simple_nn", input_shape=x.shape[1:], num_classes=10, seed=seed)


def seed_loop(x, y, x_all, *, epochs, batch_size, eval_batch_size, seed=0):
    """The seed scripts' training loop; returns (model, per-epoch logits of all samples)."""
    model = new_model(x)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    train_loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
    score_loader = DataLoader(TensorDataset(x_all), batch_size=eval_batch_size)
    history = []
    for _ in range(epochs):
        model.train()
        for xb, yb in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            history.append(torch.cat([model(xb) for (xb,) in score_loader]))
    return model, history


def engine(x, y, x_all, *, epochs, batch_size, seed=0, in_pass=False, optimiser=False,
           autograd=False):
    """raydiff's engine; per-epoch logits by an eval pass, or (``in_pass``) recorded in the
    training pass for the training samples and by an eval pass for the held-out ones."""
    model = new_model(x)
    to_score = x_all[len(x):] if in_pass else x_all
    history = []

    def score(epoch, loss):
        history.append(predict(model, to_score))
        return False

    optimizers = [torch.optim.SGD(model.parameters(), lr=LR)] if optimiser else None
    # an explicit loss (the same cross-entropy) keeps the step on autograd
    loss_fn = (lambda logits, idx: F.cross_entropy(logits, y[idx])) if autograd else None
    train(model, x, y, epochs=epochs, lr=LR, batch_size=batch_size, optimizers=optimizers,
          loss_fn=loss_fn, generator=torch.Generator().manual_seed(seed), on_epoch=score,
          record_every=1 if in_pass else 0)
    return model, history


def final_accuracy(model, x, y, tx, ty):
    return 100 * accuracy(predict(model, tx), ty), 100 * accuracy(predict(model, x), y)


def compare(name, x, y, tx, ty, *, epochs, batch_size, eval_batch_size, repeats, tolerance):
    x_all = torch.cat([x, tx])
    cases = {
        "loop": lambda: seed_loop(x, y, x_all, epochs=epochs, batch_size=batch_size or len(x),
                                  eval_batch_size=eval_batch_size),
        "engine": lambda: engine(x, y, x_all, epochs=epochs, batch_size=batch_size),
        "engine, in-pass": lambda: engine(x, y, x_all, epochs=epochs, batch_size=batch_size,
                                          in_pass=True),
        "engine, autograd": lambda: engine(x, y, x_all, epochs=epochs, batch_size=batch_size,
                                           autograd=True),
        "engine, optimiser": lambda: engine(x, y, x_all, epochs=epochs, batch_size=batch_size,
                                            optimiser=True),
    }
    wall, times = _common.interleaved(cases, repeats, clock="both")
    loop_model, loop_hist = cases["loop"]()
    engine_model, engine_hist = cases["engine"]()
    acc = {"loop": final_accuracy(loop_model, x, y, tx, ty),
           "engine": final_accuracy(engine_model, x, y, tx, ty)}
    print(f"-- {name}: {len(x)} training + {len(tx)} held-out samples, {epochs} epochs, "
          f"batch {batch_size or 'full'}, scoring all {len(x_all)} samples every epoch, "
          f"{repeats} alternating repeats")
    for label, secs in times.items():
        print(f"   {label:18s} CPU {_common.seconds(secs)} ({_common.best(secs) / epochs * 1e3:.1f} "
              f"ms/epoch); wall {_common.seconds(wall[label])}")
    for label in ("engine", "engine, in-pass", "engine, autograd", "engine, optimiser"):
        print("   " + _common.ratio_line(f"speed-up of {label} over loop, CPU time", times["loop"],
                                         times[label])
              + "; " + _common.ratio_line("wall", wall["loop"], wall[label]))
    print("   " + _common.ratio_line("engine after/before (fused step vs optimiser step), CPU",
                                     times["engine, optimiser"], times["engine"]))
    diff = max(abs(a - b) for a, b in zip(acc["loop"], acc["engine"]))
    agree = diff <= tolerance
    print(f"   final accuracy held-out / train: loop {acc['loop'][0]:.2f} / {acc['loop'][1]:.2f} %, "
          f"engine {acc['engine'][0]:.2f} / {acc['engine'][1]:.2f} %  -> "
          f"{'agree' if agree else 'DISAGREE'} (|diff| {diff:.2f} <= {tolerance} pt)")
    if batch_size is None:
        gap = (torch.stack(list(loop_hist)) - torch.stack(list(engine_hist))).abs().max().item()
        print(f"   per-epoch logits, loop vs engine: max |diff| {gap:.2e}")
    return _common.ratio(times["loop"], times["engine"])[0], agree


def main():
    p = _common.parser(__doc__)
    p.add_argument("--samples", type=int, default=5000, help="mnist5k samples used (<= 5000)")
    p.add_argument("--test", type=int, default=1000, help="of which held out")
    p.add_argument("--epochs-full", type=int, default=200)
    p.add_argument("--epochs-mini", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=None,
                   help="the loop's scoring batch (default: the training batch, as the seeds)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=["full", "mini"], choices=["full", "mini"])
    args = p.parse_args()
    if args.smoke:
        args.samples, args.test, args.epochs_full, args.epochs_mini, args.repeats = 300, 60, 3, 2, 1
    _common.pin_threads(args.threads)
    _common.header("engine vs seed-style DataLoader loop (SimpleNN, mnist5k, CPU)", args)
    x, y, tx, ty = load(args.samples, args.test)
    speed, ok = {}, True
    if "full" in args.modes:
        speed["full-batch"], agree = compare(
            "full-batch", x, y, tx, ty, epochs=args.epochs_full, batch_size=None,
            eval_batch_size=len(x) + len(tx), repeats=args.repeats,
            tolerance=0.1 if not args.smoke else 100)
        ok = ok and agree
    if "mini" in args.modes:
        speed[f"mini-batch {args.batch_size}"], agree = compare(
            "mini-batch", x, y, tx, ty, epochs=args.epochs_mini, batch_size=args.batch_size,
            eval_batch_size=args.eval_batch_size or args.batch_size, repeats=args.repeats,
            tolerance=2.0 if not args.smoke else 100)
        ok = ok and agree
    print("summary: engine over loop (CPU time) "
          + ", ".join(f"{r:.2f}x {mode}" for mode, r in speed.items())
          + f" (target >= 5x mini-batch); accuracies {'agree' if ok else 'DISAGREE'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
