"""GASTeN training: a DCGAN (step 1), then the same GAN pushed towards a classifier's
decision boundary (step 2), over device-resident image tensors.

Step 2 adds the confusion distance to the generator's loss,
``L_G = BCE(D(G(z)), 1) + alpha * mean_i |0.5 - C(G(z_i))|``, with C frozen but differentiable,
so its gradient reaches G; ``alpha = "mgda"`` weighs the two terms with the min-norm solver
at every step instead (:mod:`raydiff.engine.mgda`). One discriminator step, then one
generator step, per mini-batch; the non-saturating loss; a last partial batch is dropped
(BatchNorm needs more than one sample).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from raydiff.engine.fid import acd, embed, feature_stats, frechet_distance
from raydiff.engine.mgda import flat_grad, min_norm_weights


def confusion_distance(probs):
    """Mean |0.5 - p| of classifier outputs ``probs`` (tensor (B,)); 0 when every p = 0.5,
    differentiable, so it pulls generated images towards the decision boundary."""
    return (0.5 - probs).abs().mean()


def parse_alpha(alpha):
    """``alpha`` as a float, or the string "mgda"; ValueError otherwise."""
    if isinstance(alpha, str):
        if alpha == "mgda":
            return alpha
        try:
            alpha = float(alpha)
        except ValueError:
            raise ValueError(f"alpha={alpha!r}: give a number >= 0 or 'mgda'") from None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
        raise ValueError(f"alpha={alpha!r}: give a number >= 0 or 'mgda'")
    return float(alpha)


def adam_pair(G, D, *, lr=2e-4, betas=(0.5, 0.999)):
    return (torch.optim.Adam(G.parameters(), lr=lr, betas=betas),
            torch.optim.Adam(D.parameters(), lr=lr, betas=betas))


def noise(n, z_dim, generator, device):
    return torch.randn(n, z_dim, generator=generator).to(device)


def gan_epoch(G, D, x, *, opt_g, opt_d, batch_size, generator, classifier=None, alpha=0.0):
    """One epoch over images ``x`` (N, C, H, W) in [-1, 1] on the models' device.

    classifier, alpha : step 2's frozen classifier (images -> probabilities) and the
        weight of the confusion distance (a float, or "mgda"); None for a plain GAN.
    generator : CPU torch.Generator for the batch order and every z.
    Returns the epoch means: loss_d, loss_g (the GAN term), d_real, d_fake and, in step 2,
    loss_cd (the confusion distance) and, with mgda, mgda_weight (the share of the GAN term).
    """
    device = x.device
    z_dim = G.project[0].in_features
    params = [p for p in G.parameters() if p.requires_grad]
    G.train()
    D.train()
    sums, batches = {}, 0
    order = torch.randperm(len(x), generator=generator).to(device)
    for i in range(max(len(x) // batch_size, 1)):
        idx = order[i * batch_size:(i + 1) * batch_size]
        if len(idx) < 2:
            break
        real = x[idx]
        b = len(real)
        ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
        # discriminator step
        fake = G(noise(b, z_dim, generator, device)).detach()
        d_real, d_fake = D(real), D(fake)
        loss_d = F.binary_cross_entropy(d_real, ones) + F.binary_cross_entropy(d_fake, zeros)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # generator step
        fake = G(noise(b, z_dim, generator, device))
        loss_gan = F.binary_cross_entropy(D(fake), ones)
        stats = {"loss_d": loss_d.detach(), "loss_g": loss_gan.detach(),
                 "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}
        if classifier is None:
            loss = loss_gan
        else:
            cd = confusion_distance(classifier(fake))
            stats["loss_cd"] = cd.detach()
            if alpha == "mgda":
                w_gan, w_cd = min_norm_weights(flat_grad(loss_gan, params), flat_grad(cd, params))
                loss = w_gan * loss_gan + w_cd * cd
                stats["mgda_weight"] = torch.tensor(w_gan)
            else:
                loss = loss_gan + alpha * cd
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value
        batches += 1
    return {k: float(v) / max(batches, 1) for k, v in sums.items()}


@dataclass
class Evaluator:
    """Per-epoch quality of a generator on fixed test noise.

    test_noise : (M, z_dim) tensor on the device (M >= 2048 for a stable FID);
    classifier : the frozen classifier (images -> probabilities), with ``features``;
    feature_fn : images -> features of the FID network; feature_name names the metric;
    real_stats / real_cls_stats : (mu, sigma) of the real training images in the two spaces.
    """

    test_noise: torch.Tensor
    classifier: torch.nn.Module
    feature_fn: object
    feature_name: str
    real_stats: tuple
    real_cls_stats: tuple
    batch_size: int = 512

    @classmethod
    def for_real(cls, real, *, test_noise, classifier, feature_fn, feature_name, batch_size=512):
        return cls(test_noise, classifier, feature_fn, feature_name,
                   feature_stats(embed(feature_fn, real, batch_size=batch_size)),
                   feature_stats(embed(classifier.features, real, batch_size=batch_size)),
                   batch_size)

    @torch.no_grad()
    def images(self, G):
        was = G.training
        G.eval()
        out = torch.cat([G(self.test_noise[i:i + self.batch_size])
                         for i in range(0, len(self.test_noise), self.batch_size)])
        G.train(was)
        return out

    @torch.no_grad()
    def __call__(self, G):
        """({fid_<name>, focd, acd}, images, classifier probabilities) of G on the test noise."""
        images = self.images(G)
        probs = torch.cat([self.classifier(images[i:i + self.batch_size])
                           for i in range(0, len(images), self.batch_size)]).cpu().numpy()
        feats = embed(self.feature_fn, images, batch_size=self.batch_size)
        cls_feats = embed(self.classifier.features, images, batch_size=self.batch_size)
        metrics = {f"fid_{self.feature_name}": frechet_distance(*feature_stats(feats), *self.real_stats),
                   "focd": frechet_distance(*feature_stats(cls_feats), *self.real_cls_stats),
                   "acd": acd(probs)}
        return metrics, images, probs


def sorted_grid_indices(probs, n):
    """Positions of ``n`` samples spread evenly over the ranking by classifier output, in
    increasing order of it (the grid of samples sorted by C)."""
    order = np.argsort(probs, kind="stable")
    picks = np.linspace(0, len(order) - 1, num=min(n, len(order))).round().astype(int)
    return order[picks]
