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

    python benchmarks/vog_pass.py [--dataset mnist5k] [--model small_cnn] [--checkpoints 10]
"""

import argparse
import json
import time
import tracemalloc

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


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def peak_bytes(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="SGD steps between checkpoints")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = prepare(load_dataset(args.dataset), device=args.device)
    x, y = data.x, data.y
    model = get_model(args.model, input_shape=x.shape[1:], num_classes=data.num_classes,
                      hidden=[256], seed=0).to(args.device)
    states = checkpoints(model, x, y, args.checkpoints, args.steps)
    dtype = np.dtype(args.dtype)

    t_predict, _ = timed(lambda: predict_passes(model, states, x, args.batch_size), args.repeats)
    t_vog, scores = timed(lambda: vog_pass(model, states, x, y, args.batch_size, dtype),
                          args.repeats)
    t_stored, reference = timed(lambda: stored_pass(model, states, x, y, args.batch_size),
                                args.repeats)
    for stage, ref in reference.items():
        np.testing.assert_allclose(scores[stage], ref, rtol=1e-3, atol=1e-9 * ref.max())
    m_vog = peak_bytes(lambda: vog_pass(model, states, x, y, args.batch_size, dtype))
    m_stored = peak_bytes(lambda: stored_pass(model, states, x, y, args.batch_size))
    result = {
        "dataset": args.dataset, "model": args.model, "n": len(x),
        "pixels": int(_maps(x[:1]).shape[1]), "K": args.checkpoints, "dtype": args.dtype,
        "device": args.device, "threads": args.threads,
        "vog_pass_s": round(t_vog, 3), "predict_passes_s": round(t_predict, 3),
        "stored_maps_pass_s": round(t_stored, 3),
        "time_vog_over_predict": round(t_vog / t_predict, 2),
        "time_vog_over_stored": round(t_vog / t_stored, 2),
        "peak_mib_vog": round(m_vog / 2**20, 1), "peak_mib_stored": round(m_stored / 2**20, 1),
        "memory_stored_over_vog": round(m_stored / m_vog, 2),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
