"""GASTeN, step 1: a plain DCGAN on the (pos, neg) training images.

The generator and discriminator are saved every ``checkpoint_every`` epochs as
``step1_epoch<EEE>.pt``, epoch 0 (untrained) included, for step 2 to start from; the
losses (loss_d, loss_g, mean D(x), mean D(G(z))) are reported per epoch. A trial killed
mid-training goes on from its last checkpoint.
"""

from dataclasses import dataclass

from raydiff.data import GAN_STREAM, INIT_STREAM, derived_seed, torch_generator
from raydiff.engine.gan import adam_pair, gan_epoch
from raydiff.engine.state import restore_state, save_state
from raydiff.experiments._gasten import GanTraining, binary_data, gan_state, gan_parts
from raydiff.experiments.config import Figures, at_least, figures
from raydiff.models.gasten import make_gan
from raydiff.plots.images import image_grid

NAME = "gasten_step1"


@dataclass
class Step1Figures(Figures):
    grid_size: int = at_least(64, 0)     # samples of the final generator in samples.png


@dataclass
class Config(GanTraining):
    z_dim: int = at_least(64, 1)
    width: int = at_least(64, 1)
    epochs: int = at_least(10, 0)
    checkpoint_every: int = at_least(1, 1)
    figures: Step1Figures = figures(Step1Figures)

    SMOKE = {"epochs": 2, "width": 16}


def run(config, report, data):
    device = report.device
    binary = binary_data(config, data, device)
    x = binary.train_x
    report.trains_on(binary.train_id, binary.class_of(binary.train_y))
    G, D = make_gan(z_dim=config.z_dim, width=config.width,
                    seed=derived_seed(config.seed, INIT_STREAM, config.run))
    G, D = G.to(device), D.to(device)
    opt_g, opt_d = adam_pair(G, D, lr=config.lr, betas=(config.beta1, config.beta2))
    gen = torch_generator(derived_seed(config.seed, GAN_STREAM, config.run, 1))
    start = 0
    if report.resume_state is not None:
        start, _ = restore_state(report.resume_state, **gan_parts(G, D, opt_g, opt_d, gen))
        report.tag("raydiff.resumed_from_epoch", start)
    else:
        report.torch("step1_epoch000.pt", gan_state(G, D, config.z_dim, config.width))
    metrics = {}
    for epoch in range(start + 1, config.epochs + 1):
        metrics = gan_epoch(G, D, x, opt_g=opt_g, opt_d=opt_d, batch_size=config.batch_size,
                            generator=gen)
        checkpoint = None
        if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
            report.torch(f"step1_epoch{epoch:03d}.pt", gan_state(G, D, config.z_dim, config.width))
            checkpoint = save_state(epoch, **gan_parts(G, D, opt_g, opt_d, gen))
        report(metrics, step=epoch, checkpoint=checkpoint)
    if config.figures.enabled and config.figures.grid_size:
        import torch

        z = torch.randn(config.figures.grid_size, config.z_dim,
                        generator=torch_generator(config.seed, GAN_STREAM)).to(device)
        G.eval()
        with torch.no_grad():
            report.figure("samples.png", image_grid(G(z), title=f"step 1, epoch {config.epochs}"))
    return metrics
