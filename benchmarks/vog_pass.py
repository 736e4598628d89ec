"""Time and memory of one VoG pass (K checkpoints over every sample), against baselines
measured in the same process.

A VoG pass here is what the ``vog`` experiment adds to training: at each of K checkpoints
the batched input gradients of all N samples, folded into the running moments, then the
scores of every stage. Baselines:

- time: K plain no-grad prediction passes over the same samples (the evaluation a
  training run does anyway);
- memory: keeping all K gradient maps (K x N x P float32) and taking the per-stage
  standard deviations from them, the straightforward way.

Memory is the peak of numpy allocations (``tracemalloc``: the accumulator, the stored
maps and their temporaries; torch's own per-batch buffers are the same in both and are
not counted). The K checkpoints are the model after 0, s, 2s, ... SGD steps, made
before anything is timed.

Times are CPU seconds of this process (and wall), best of ``--repeats`` interleaved runs.

    python benchmarks/vog_pass.py [--smoke] [--model small_cnn] [--checkpoints 10] [--no-memory]
"""

import tracemalloc

import _common
import numpy as np
import torch
import torch.nn.functional as F

from raydiff.data import load_dataset, prepare
from raydiff.engine import predict
from raydiff.engine.input_grad import input_gradients
from raydiff.experiments.vog import _maps
from raydiff.models import get_model
from raydiff.scores.vog import VoGAccumulator, stage_checkpoints


def checkpoints(model, x, y, k, steps, lr=0.05, seed=0):
    """K state dicts: the model after 0, steps, 2*steps, ... SGD steps of batch 128."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    states = []
    for _ in range(k):
        states.append({n: t.detach().clone() for n, t in model.state_dict().items()})
        for _ in range(steps):
            idx = torch.randint(0, len(x), (128,), generator=gen)
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return states


def predict_passes(model, states, x, batch_size):
    for state in states:
        model.load_state_dict(state)
        predict(model, x, batch_size=batch_size)


def vog_pass(model, states, x, y, batch_size, dtype):
    acc = VoGAccumulator(len(x), _maps(x[:1]).shape[1], len(states), dtype=dtype)
    for t, state in enumerate(states):
        model.load_state_dict(state)
        for rows, grad, _ in input_gradients(model, x, y, batch_size=batch_size):
            acc.add(t, _maps(grad), rows)
    return acc.scores()


def stored_pass(model, states, x, y, batch_size):
    maps = np.empty((len(states), len(x), _maps(x[:1]).shape[1]), dtype=np.float32)
    for t, state in enumerate(states):
        model.load_state_dict(state)
        for rows, grad, _ in input_gradients(model, x, y, batch_size=batch_size):
            maps[t, rows] = _maps(grad)
    return {stage: maps[idx].std(axis=0).mean(axis=1, dtype=np.float64)
            for stage, idx in stage_checkpoints(len(states)).items()}


def peak_bytes(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main():
    p = _common.parser(__doc__)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--samples", type=int, default=None, help="first n samples (default all)")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--checkpoints", type=int, default=10)
    p.add_argument("--steps", type=int, default=20, help="SGD steps between checkpoints")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-memory", action="store_true",
                   help="skip the memory runs (their numpy peaks do not depend on the model)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    if args.smoke:
        args.samples, args.model, args.checkpoints, args.steps, args.repeats = 300, "simple_nn", 6, 1, 1
    _common.pin_threads(args.threads)
    _common.header(f"VoG pass: {args.model} on {args.dataset}, K = {args.checkpoints}", args)
    data = prepare(load_dataset(args.dataset), subset_size=args.samples, device=args.device)
    x, y = data.x, data.y
    model = get_model(args.model, input_shape=x.shape[1:], num_classes=data.num_classes,
                      hidden=[256], seed=0).to(args.device)
    states = checkpoints(model, x, y, args.checkpoints, args.steps)
    dtype = np.dtype(args.dtype)
    out = {}
    cases = {
        "vog": lambda: out.__setitem__("vog", vog_pass(model, states, x, y, args.batch_size, dtype)),
        "predict": lambda: predict_passes(model, states, x, args.batch_size),
        "stored": lambda: out.__setitem__("stored", stored_pass(model, states, x, y,
                                                                args.batch_size)),
    }
    wall, cpu = _common.interleaved(cases, args.repeats, warmup=args.repeats > 1, clock="both")
    for stage, ref in out["stored"].items():
        np.testing.assert_allclose(out["vog"][stage], ref, rtol=1e-3, atol=1e-9 * ref.max())
    print(f"   N = {len(x)}, pixels = {_maps(x[:1]).shape[1]}, moments in {args.dtype}, "
          f"device {args.device}, {args.threads} thread(s); scores agree with the stored maps")
    for name in cases:
        print(f"   {name}: wall {_common.seconds(wall[name])}; CPU {_common.seconds(cpu[name])}")
    print("   " + _common.ratio_line(f"VoG pass over {args.checkpoints} predict passes, CPU",
                                     cpu["vog"], cpu["predict"]))
    print("   " + _common.ratio_line("VoG pass over stored-maps pass, CPU", cpu["vog"],
                                     cpu["stored"]))
    summary = (f"summary: VoG pass (K = {args.checkpoints}) takes "
               f"{_common.ratio(cpu['vog'], cpu['predict'])[0]:.2f}x the CPU time of "
               f"{args.checkpoints} predict passes")
    if not args.no_memory:
        m_vog = peak_bytes(cases["vog"])
        m_stored = peak_bytes(cases["stored"])
        print(f"   numpy peak: VoG {m_vog / 2**20:.1f} MiB, stored maps {m_stored / 2**20:.1f} MiB")
        summary += f"; stored maps need {m_stored / m_vog:.2f}x its peak memory"
    print(summary)


if __name__ == "__main__":
    main()
