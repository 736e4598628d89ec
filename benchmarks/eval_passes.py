"""The final-model inputs of the hardness methods (train_classifier's ``model_inputs``),
with its shared passes against one pass per input, LeNet on mnist5k, in this process.

After training, ``train_classifier`` evaluates the model for the registry's inputs:
logits, the penultimate embedding, ``mc_passes`` Monte-Carlo dropout passes and ALLSH's
clean view plus 4 augmentations. Timed alternately:

- separate: every input its own passes, as before (logits, embedding, 10 full MC-dropout
  passes, 5 ALLSH views): 17 forward passes of the whole network;
- shared: ``model_inputs``: logits and embedding from one pass, LeNet's convolutions
  (``features``) once for all MC-dropout passes, ALLSH's clean view from the logits.

Both give the same numbers (checked here, and in tests/test_hardness_methods.py). For
scale, one training epoch of H-CAT's recipe (Adam, batch 64) is timed beside them.
CPU seconds of this process on one thread (and wall), best of ``--repeats``.

    python benchmarks/eval_passes.py [--smoke] [--repeats 3] [--batch-size 8192]
"""

import _common
import torch
import torch.nn.functional as F

from raydiff.data import BATCH_STREAM, derived_seed, load_dataset, prepare
from raydiff.engine import predict
from raydiff.engine.perturb import augmented_probs, mc_dropout_probs, penultimate
from raydiff.experiments.common import AUGMENT_DRAW, MC_DROPOUT_DRAW
from raydiff.experiments.train_classifier import Config, model_inputs
from raydiff.models import get_model


def separate(config, model, x):
    """``model_inputs``' four inputs, each from passes of its own (``Sequential`` hides
    LeNet's split), with the seeds ``model_inputs`` derives."""
    full, bs = torch.nn.Sequential(model), config.eval_batch_size
    aug = torch.Generator().manual_seed(derived_seed(config.seed, BATCH_STREAM, AUGMENT_DRAW))
    return {"logits": predict(full, x, batch_size=bs),
            "embeddings": penultimate(full, x, batch_size=bs),
            "dropout_probs": mc_dropout_probs(
                full, x, passes=config.mc_passes, batch_size=bs,
                seed=derived_seed(config.seed, BATCH_STREAM, MC_DROPOUT_DRAW)),
            "augmented_probs": augmented_probs(full, x, batch_size=bs, generator=aug)[0]}


def main():
    p = _common.parser(__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=Config.eval_batch_size,
                   help="eval batch size (train_classifier's default)")
    args = p.parse_args()
    _common.pin_threads(args.threads)
    _common.header("final-model inputs: shared passes vs one pass per input", args)
    data = prepare(load_dataset("mnist5k"), subset_size=256 if args.smoke else None)
    x, y, n = data.x.reshape(-1, 1, 28, 28), data.y, len(data.y)
    model = get_model("lenet", input_shape=(1, 28, 28), num_classes=10, seed=0)
    config = Config(model="lenet", eval_batch_size=args.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch():
        model.train()
        for i in range(0, n, 64):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()

    epoch()                                          # a model that has trained a little
    shared, ref = model_inputs(config, model, x), separate(config, model, x)
    gap = max(float(abs(torch.as_tensor(shared[k]) - ref[k].double()).max()) for k in ref)
    print(f"   {n} digits, LeNet, eval batch {args.batch_size}, {config.mc_passes} MC-dropout "
          f"passes; shared vs separate: max |diff| {gap:.1e} over {sorted(ref)}")

    cases = {
        "separate": lambda: separate(config, model, x),
        "shared": lambda: model_inputs(config, model, x),
        "train epoch": epoch,
    }
    wall, cpu = _common.interleaved(cases, 1 if args.smoke else args.repeats, clock="both")
    for name in cases:
        print(f"   {name:12s} CPU {_common.seconds(cpu[name])}; wall {_common.seconds(wall[name])}")
    print(f"summary: shared over separate: {_common.ratio_line('CPU', cpu['separate'], cpu['shared'])}"
          f"; {_common.ratio_line('wall', wall['separate'], wall['shared'])}; "
          f"separate = {_common.best(cpu['separate']) / _common.best(cpu['train epoch']):.1f} "
          f"training epochs, shared = "
          f"{_common.best(cpu['shared']) / _common.best(cpu['train epoch']):.1f}")


if __name__ == "__main__":
    main()
