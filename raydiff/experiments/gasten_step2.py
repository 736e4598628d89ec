"""GASTeN, step 2: push a step-1 GAN towards a classifier's decision boundary.

For one classifier (``gasten_classifier`` stage), one step-1 run and epoch
(``gasten_step1``, ``step1_epoch``) and one weight ``alpha`` (a number, or ``mgda``), G and
D start from the step-1 checkpoint with fresh optimisers, and the generator's loss gains
the confusion distance (:mod:`raydiff.engine.gan`). After every epoch, on a fixed test
noise (``test_noise_size`` x z_dim, seeded with ``test_noise_seed``, the same in every
run, saved as ``test_noise.npy``): ``fid_<net>`` in the ``gasten_featnet`` stage's
feature space, ``focd`` in the classifier's flatten features, ``acd`` (mean |0.5 - C|),
against the real (pos, neg) training images; and a grid of samples sorted by classifier
output. Epoch 0 is the step-1 generator as loaded.

Artifacts: ``metrics.parquet`` (one row per epoch; ``saved`` marks the epochs whose
generator was kept), ``step2_epoch<EEE>.pt`` every ``checkpoint_every`` epochs and at the
last, ``classifier.pt`` (the classifier used, for the ambiguity stage), the test noise
and the grids. A trial killed mid-training goes on from its last checkpoint.
"""

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from raydiff.data import GAN_STREAM, derived_seed, torch_generator
from raydiff.engine.state import restore_state, save_state
from raydiff.engine.gan import Evaluator, adam_pair, gan_epoch, parse_alpha, sorted_grid_indices
from raydiff.experiments._gasten import (GanTraining, binary_data, gan_state,
                                         load_classifier, load_feature_net, gan_parts)
from raydiff.experiments.config import ConfigError, Figures, at_least, figures
from raydiff.models.gasten import make_gan
from raydiff.plots.images import image_grid

NAME = "gasten_step2"
CONSUMES = ("gasten_classifier", "gasten_step1", "gasten_featnet")


@dataclass
class Step2Figures(Figures):
    grid_size: int = at_least(64, 0)     # samples per grid, sorted by C(G(z)); 0 = no grids
    grid_every: int = at_least(1, 1)     # a grid every n epochs (and at the last)


@dataclass
class Config(GanTraining):
    step1_epoch: int = at_least(5, 0)
    alpha: float | str = 25.0
    epochs: int = at_least(40, 1)
    checkpoint_every: int = at_least(10, 1)
    test_noise_size: int = at_least(2048, 2)
    test_noise_seed: int = 0
    figures: Step2Figures = figures(Step2Figures)
    eval_batch_size: int = at_least(512, 1)

    SMOKE = {"epochs": 2, "checkpoint_every": 1, "test_noise_size": 256, "step1_epoch": 1}

    def check(self, where):
        super().check(where)
        try:
            parse_alpha(self.alpha)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def test_noise(n, z_dim, seed):
    """The fixed test noise: (n, z_dim) standard normal from ``seed`` alone."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(int(seed)))


def alpha_label(alpha):
    alpha = parse_alpha(alpha)
    return alpha if alpha == "mgda" else f"{alpha:g}"


def run(config, report, data):
    device = report.device
    alpha = parse_alpha(config.alpha)
    binary = binary_data(config, data, device)
    report.trains_on(binary.train_id, binary.class_of(binary.train_y))
    classifier_state = report.upstream("gasten_classifier").torch("classifier.pt")
    C = load_classifier(classifier_state, device)
    start_state = report.upstream("gasten_step1").torch(f"step1_epoch{config.step1_epoch:03d}.pt")
    z_dim, width = start_state["z_dim"], start_state["width"]
    G, D = make_gan(z_dim=z_dim, width=width)
    G.load_state_dict(start_state["G"])
    D.load_state_dict(start_state["D"])
    G, D = G.to(device), D.to(device)
    feature_fn, feature_name = load_feature_net(
        report.upstream("gasten_featnet").torch("featnet.pt"), device)
    noise = test_noise(config.test_noise_size, z_dim, config.test_noise_seed)
    evaluate = Evaluator.for_real(binary.train_x, test_noise=noise.to(device), classifier=C,
                                  feature_fn=feature_fn, feature_name=feature_name,
                                  batch_size=config.eval_batch_size)
    opt_g, opt_d = adam_pair(G, D, lr=config.lr, betas=(config.beta1, config.beta2))
    gen = torch_generator(derived_seed(config.seed, GAN_STREAM, config.run, 2))

    rows, start = [], 0
    if report.resume_state is not None:
        start, extra = restore_state(report.resume_state, **gan_parts(G, D, opt_g, opt_d, gen))
        rows = list(extra["rows"])
        report.tag("raydiff.resumed_from_epoch", start)
    else:
        report.array("test_noise.npy", noise.numpy())
        report.torch("classifier.pt", classifier_state)
        quality, images, probs = evaluate(G)
        rows.append({"epoch": 0, **quality, "saved": False})
        report(quality, step=0)
        _grid(report, config, 0, images, probs)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for epoch in range(start + 1, config.epochs + 1):
        started = time.perf_counter()
        losses = gan_epoch(G, D, binary.train_x, opt_g=opt_g, opt_d=opt_d,
                           batch_size=config.batch_size, generator=gen, classifier=C, alpha=alpha)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        quality, images, probs = evaluate(G)
        saved = epoch % config.checkpoint_every == 0 or epoch == config.epochs
        if saved:
            report.torch(f"step2_epoch{epoch:03d}.pt", gan_state(G, None, z_dim, width))
        if epoch % config.figures.grid_every == 0 or epoch == config.epochs:
            _grid(report, config, epoch, images, probs)
        metrics = {**losses, **quality, "epoch_seconds": seconds}
        if device == "cuda":
            metrics["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append({"epoch": epoch, **quality, "saved": saved})
        report.table("metrics.parquet", pd.DataFrame(rows))
        checkpoint = (save_state(epoch, **gan_parts(G, D, opt_g, opt_d, gen), rows=rows)
                      if saved else None)
        report(metrics, step=epoch, checkpoint=checkpoint)
    return report.last


def _grid(report, config, epoch, images, probs):
    if not (config.figures.enabled and config.figures.grid_size):
        return
    pick = sorted_grid_indices(probs, config.figures.grid_size)
    fig = image_grid(images[torch.as_tensor(pick)], titles=[f"{p:.2f}" for p in np.asarray(probs)[pick]],
                     title=f"alpha {alpha_label(config.alpha)}, epoch {epoch}: sorted by C(G(z))")
    report.figure(f"grid_epoch{epoch:03d}.png", fig)
