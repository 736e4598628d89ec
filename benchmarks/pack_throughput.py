"""Model-epochs per second of a pack of K SimpleNNs against the single-model engine and the GEMM floor.

For each pack size K (default 1, 4, 16, 64, 256) and mode (full-batch, mini-batch 64) the
script times, alternately in this process (see _common):

- pack: :func:`raydiff.engine.packed.train_packed` training K SimpleNNs (seeds 0..K-1,
  their own shuffle generators) for the mode's epochs; per model-epoch = time / (K * epochs);
- single: :func:`raydiff.engine.train` training one SimpleNN the same way (per model-epoch);
- floor: the two ``N x D x 20K`` products a full-batch pack epoch cannot avoid (layer 1's
  forward ``x @ W`` and its weight gradient ``G^T @ x``) alone, divided by K.

Figures: milliseconds per model-epoch (CPU seconds of this process, and wall), the ratios
single / pack (the speed-up) and pack / floor, and the peak memory of a pack: on CPU the
growth of this process's ``ru_maxrss`` (resident peak, monotone) over the peak before the
pack's first run; packs run in increasing K, so each growth is what the larger pack
needed beyond the smaller ones. On CUDA: ``torch.cuda.max_memory_allocated`` of the run.

Mode ``subsets`` (full batch, K = 18 models as in an imbalance pack, each on its own random
subset of a share f = 0.2, 0.5, 0.9 of N): the pack as :func:`train_packed` runs it (on the
CPU, one model after another where ``one_by_one_pays``), the stacked step forced
(every model's products over all N rows, masked, or over gathered rows for small subsets),
and the single engine on each subset in turn.

``--torch-func`` (a section of its own, instead of the modes): the pack's hand-written
SimpleNN step (:func:`raydiff.engine.pack_step.pack_step`) against ``torch.func``
(``vmap(grad_and_value(...))`` of ``functional_call`` over ``stack_module_state``), both
followed by the same :func:`raydiff.engine.sgd.sgd_update_`, at K = 1, 16, 64 (``--ks``),
full batch and mini-batch ``--batch-size``; per model-step CPU ms, medians of
``--repeats`` alternating runs, and their ratio from the same run. Before timing, one
step's gradients of both are compared (the largest difference is printed).

CPU: mnist5k (5000 x 784), one thread by default. ``--device cuda``: synthetic inputs of
full MNIST size (60000 x 784, random labels) and K up to 4096; without a CUDA device the
script says so and exits 0. A pack that does not fit in the GPU's memory is reported, not
fatal.

    python benchmarks/pack_throughput.py [--smoke] [--device cpu|cuda] [--ks 1 4 16 64 256]
        [--modes full mini subsets] [--epochs-full 5] [--epochs-mini 1] [--batch-size 64] [--repeats 3]
    python benchmarks/pack_throughput.py --torch-func [--ks 1 16 64] [--repeats 5]
"""

import copy
import resource
import statistics

import _common
import torch
import torch.nn.functional as F

from raydiff.engine import train
from raydiff.engine.packed import Pack, train_packed
from raydiff.models import get_model

HIDDEN = 20
LR = 0.1


def rss_bytes():
    # Linux reports ru_maxrss in KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load(device, samples, smoke):
    if device == "cuda":
        gen = torch.Generator().manual_seed(0)
        n = samples or (4000 if smoke else 60000)
        x = torch.randn(n, 784, generator=gen)
        y = torch.randint(0, 10, (n,), generator=gen)
        return x.to(device), y.to(device), f"synthetic {n} x 784, 10 random classes"
    from raydiff.data import load_dataset, prepare
    data = prepare(load_dataset("mnist5k"), subset_size=samples or (500 if smoke else None),
                   subset_seed=0)
    x = data.x.flatten(1)          # (N, 1, 28, 28) -> (N, 784): SimpleNN flattens anyway
    return x, data.y, f"mnist5k, {len(x)} x {x.shape[1]}"


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def cases_for(k, x, y, *, batch_size, epochs, device):
    shape = x.shape[1:]
    base = Pack.init(range(k), input_shape=shape, num_classes=10, device=device)
    single_init = get_model("simple_nn", input_shape=shape, num_classes=10, seed=0).to(device)

    def pack():
        p = base.clone()
        gens = [torch.Generator().manual_seed(1000 + i) for i in range(k)]
        train_packed(p, x, y, epochs=epochs, lr=LR, batch_size=batch_size, generators=gens)
        sync(device)

    def single():
        model = get_model("simple_nn", input_shape=shape, num_classes=10, seed=0).to(device)
        model.load_state_dict(single_init.state_dict())
        train(model, x, y, epochs=epochs, lr=LR, batch_size=batch_size,
              generator=torch.Generator().manual_seed(1000))
        sync(device)

    w = torch.randn(x.shape[1], HIDDEN * k, device=device)
    g = torch.randn(len(x), HIDDEN * k, device=device)

    def floor():
        for _ in range(epochs):
            x @ w
            g.t() @ x
        sync(device)

    return {"pack": pack, "single": single, "floor": floor}


SUBSET_MODELS = 18
SUBSET_SHARES = (0.2, 0.5, 0.9)


def subset_cases(share, x, y, *, epochs, device):
    """Pack (as run), stacked (one-by-one off) and single, K models on subsets of ``share``."""
    import numpy as np

    from raydiff.engine import pack_train

    n, k = len(x), SUBSET_MODELS
    rng = np.random.default_rng(0)
    subsets = [np.sort(rng.choice(n, int(n * share), replace=False)) for _ in range(k)]
    base = Pack.init(range(k), input_shape=x.shape[1:], num_classes=10, device=device)

    def run_pack(one_by_one):
        def fn():
            saved = pack_train.one_by_one_pays
            if not one_by_one:
                pack_train.one_by_one_pays = lambda rows, n: False
            try:
                train_packed(base.clone(), x, y, epochs=epochs, lr=LR, subsets=subsets)
            finally:
                pack_train.one_by_one_pays = saved
            sync(device)
        return fn

    def single():
        for i, rows in enumerate(subsets):
            model = base.model(i)
            idx = torch.as_tensor(rows, device=device)
            train(model, x[idx], y[idx], epochs=epochs, lr=LR)
        sync(device)

    return {"pack": run_pack(True), "stacked": run_pack(False), "single": single}


FUNC_KS = (1, 16, 64)
FUNC_MINI_STEPS, FUNC_MINI_DISTINCT = 40, 4


def func_cases(k, x, y, *, batch_size, device):
    """Hand-written step vs torch.func, each stepping its own copy of the same K models over
    the same batches; returns (cases, steps per call, largest gradient difference)."""
    from torch.func import functional_call, grad_and_value, stack_module_state, vmap

    from raydiff.engine.pack_step import cross_entropy_grad, pack_step, simple_nn_grads
    from raydiff.engine.sgd import Hyper, sgd_update_

    models = [get_model("simple_nn", input_shape=x.shape[1:], num_classes=10, seed=s).to(device)
              for s in range(k)]
    pack = Pack.from_models(models)
    params, _ = stack_module_state(models)            # {name: (K, ...)}, pack.params order
    skeleton = copy.deepcopy(models[0]).to("meta")
    hyper = Hyper.of(LR, 0.0, 0.0, device=device, k=k)
    shared = batch_size is None
    if shared:
        batches = [(x, y[None].expand(k, -1))]
    else:
        gen = torch.Generator().manual_seed(0)
        idx = [torch.randint(0, len(x), (k, batch_size), generator=gen).to(device)
               for _ in range(FUNC_MINI_DISTINCT)]
        distinct = [(x[i], y[i]) for i in idx]
        batches = [distinct[s % FUNC_MINI_DISTINCT] for s in range(FUNC_MINI_STEPS)]

    def mean_loss(p, xb, yb):
        logits = functional_call(skeleton, p, (xb,))
        return F.cross_entropy(logits, yb), logits
    func_grad = vmap(grad_and_value(mean_loss, has_aux=True),
                     in_dims=(0, None if shared else 0, 0))

    # the two compute the same gradients (checked on the first batch, before any step)
    xb, yb = batches[0]
    acts, logits = pack.activations(xb, per_model=not shared)
    _, grad_logits = cross_entropy_grad(logits, yb, yb.shape[1])
    hand = simple_nn_grads(pack, xb, acts, grad_logits, shared=shared)
    grads, _ = func_grad(params, xb, yb)
    diff = max(float((a - grads[name].detach()).abs().max()) for a, name in zip(hand, params))

    def hand_step():
        for xb, yb in batches:
            pack_step(pack, xb, yb, hyper, den=yb.shape[1], per_model=not shared)
        sync(device)

    def func_step():
        for xb, yb in batches:
            grads, (_, logits) = func_grad(params, xb, yb)
            sgd_update_(list(params.values()), [grads[n] for n in params], hyper)
        sync(device)

    return {"hand-written": hand_step, "torch.func": func_step}, len(batches), diff


def run_torch_func(args, x, y):
    """The --torch-func section: hand-written SimpleNN step vs torch.func, per model-step."""
    ks = args.ks or ([1, 4] if args.smoke else list(FUNC_KS))
    print(f"-- torch.func (vmap(grad) over stack_module_state) vs the hand-written step, "
          f"{args.repeats} alternating repeats, median CPU ms per model-step")
    print(f"   {'mode':<14} {'K':>4} {'hand-written':>13} {'torch.func':>11} "
          f"{'func/hand':>10} {'max |grad diff|':>16}")
    worst = []
    for mode, batch_size in (("full-batch", None), (f"mini-batch {args.batch_size}",
                                                    args.batch_size)):
        for k in ks:
            cases, steps, diff = func_cases(k, x, y, batch_size=batch_size, device=args.device)
            wall, cpu = _common.interleaved(cases, args.repeats, clock="both")
            clock = wall if args.device == "cuda" else cpu
            per = {name: statistics.median(t) / (steps * k) * 1e3 for name, t in clock.items()}
            ratio = per["torch.func"] / per["hand-written"]
            worst.append(ratio)
            print(f"   {mode:<14} {k:>4} {per['hand-written']:>13.4f} {per['torch.func']:>11.4f} "
                  f"{ratio:>9.2f}x {diff:>16.2e}")
    verdict = ("torch.func within 1.2x somewhere" if min(worst) <= 1.2
               else "hand-written faster everywhere")
    print(f"summary: torch.func / hand-written per model-step: {min(worst):.2f}x to "
          f"{max(worst):.2f}x ({verdict})")


def peak_of(fn, device):
    """Run ``fn`` once (it is also the warm-up) and return its peak memory in bytes."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        fn()
        return torch.cuda.max_memory_allocated()
    before = rss_bytes()
    fn()
    return rss_bytes() - before


def main():
    p = _common.parser(__doc__)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--ks", type=int, nargs="+", default=None,
                   help="pack sizes (default 1 4 16 64 256; cuda 1 16 256 1024 4096)")
    p.add_argument("--modes", nargs="+", default=["full", "mini", "subsets"],
                   choices=["full", "mini", "subsets"])
    p.add_argument("--epochs-full", type=int, default=5)
    p.add_argument("--epochs-mini", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--samples", type=int, default=None,
                   help="samples used (cpu: of mnist5k; cuda: synthetic, default 60000)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--torch-func", action="store_true",
                   help="time torch.func against the hand-written step (instead of the modes)")
    args = p.parse_args()
    _common.pin_threads(args.threads)
    _common.header("pack throughput: K SimpleNNs as one computation vs the single engine", args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("   skipped, no CUDA device on this machine (nothing timed)")
        print("summary: pack throughput skipped, no CUDA device")
        return
    if args.device == "cuda":
        print(f"   device: {torch.cuda.get_device_name()}")
    if args.smoke:
        ks = args.ks or [1, 4]
        args.epochs_full, args.epochs_mini, args.repeats = 2, 1, 1
    else:
        ks = args.ks or ([1, 16, 256, 1024, 4096] if args.device == "cuda"
                         else [1, 4, 16, 64, 256])
    x, y, what = load(args.device, args.samples, args.smoke)
    if args.torch_func:
        print(f"   data: {what}; SimpleNN 784-20-20-10, lr {LR}")
        run_torch_func(args, x, y)
        return
    mem = "torch.cuda.max_memory_allocated" if args.device == "cuda" else \
        "ru_maxrss growth over the process peak before the pack's first run"
    print(f"   data: {what}; SimpleNN 784-20-20-10, lr {LR}; {args.repeats} alternating "
          f"repeats, best run; times per model-epoch in ms; peak memory: {mem}")
    summary = {}
    for mode in args.modes:
        if mode == "subsets":
            epochs = args.epochs_full
            print(f"-- full-batch on subsets, {SUBSET_MODELS} models, {epochs} epoch(s) per run")
            for share in SUBSET_SHARES:
                cases = subset_cases(share, x, y, epochs=epochs, device=args.device)
                wall, cpu = _common.interleaved(cases, args.repeats, clock="both")
                clock = wall if args.device == "cuda" else cpu
                per = {name: _common.best(t) / (epochs * SUBSET_MODELS) * 1e3
                       for name, t in clock.items()}
                summary.setdefault("subsets", []).append(
                    (f"{share:.0%}", per["single"] / per["pack"]))
                print(f"   subsets of {share:.0%} of N: pack {per['pack']:.3f} ms, stacked "
                      f"{per['stacked']:.3f} ms, single {per['single']:.3f} ms per model-epoch "
                      f"| single/pack {per['single'] / per['pack']:.2f}x, single/stacked "
                      f"{per['single'] / per['stacked']:.2f}x")
            continue
        batch_size = None if mode == "full" else args.batch_size
        epochs = args.epochs_full if mode == "full" else args.epochs_mini
        label = "full-batch" if mode == "full" else f"mini-batch {args.batch_size}"
        print(f"-- {label}, {epochs} epoch(s) per run")
        for k in ks:
            try:
                cases = cases_for(k, x, y, batch_size=batch_size, epochs=epochs,
                                  device=args.device)
                peak = peak_of(cases["pack"], args.device)
                cases["single"](), cases["floor"]()           # their warm-up
                wall, cpu = _common.interleaved(cases, args.repeats, warmup=False, clock="both")
            except torch.cuda.OutOfMemoryError:
                print(f"   K={k:5d}: does not fit in the GPU's memory")
                torch.cuda.empty_cache()
                continue
            clock = wall if args.device == "cuda" else cpu   # GPU work is not CPU time
            per = {name: _common.best(s) / (epochs * (1 if name == "single" else k)) * 1e3
                   for name, s in clock.items()}
            per_wall = {name: _common.best(s) / (epochs * (1 if name == "single" else k)) * 1e3
                        for name, s in wall.items()}
            speedup = per["single"] / per["pack"]
            median = (statistics.median(clock["single"]) / statistics.median(clock["pack"])) * k
            summary.setdefault(label, []).append((k, speedup))
            print(f"   K={k:5d}: pack {per['pack']:.3f} ms (wall {per_wall['pack']:.3f}), "
                  f"single {per['single']:.3f} ms (wall {per_wall['single']:.3f}), "
                  f"floor {per['floor']:.3f} ms | single/pack {speedup:.2f}x (median "
                  f"{median:.2f}x), pack/floor {per['pack'] / per['floor']:.2f}x | "
                  f"model-epochs/s {1e3 / per_wall['pack']:.0f} (wall) | "
                  f"peak {peak / 2**20:.1f} MiB")
    clock_name = "wall" if args.device == "cuda" else "CPU time"
    parts = [f"{label}: " + ", ".join(f"{k if label == 'subsets' else f'K={k}'} {s:.2f}x"
                                      for k, s in rows)
             for label, rows in summary.items()]
    print(f"summary: pack over single engine ({clock_name}, per model-epoch) | "
          + " | ".join(parts))


if __name__ == "__main__":
    main()
