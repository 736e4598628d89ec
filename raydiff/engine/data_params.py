"""Data parameters: a learnable temperature per class and/or per training sample.

Each sample's logits are divided by sigma* before the cross-entropy, where (parameters
kept in log space, so sigma stays positive without constraints)

    sigma*_i = exp(c[y_i]) + exp(s_i)   class and instance parameters,
               exp(c[y_i]) or exp(s_i)  one group,
               1                        neither (plain cross-entropy).

A large sigma* flattens the softmax and shrinks the sample's gradient: the model learns
to ignore samples it cannot fit (e.g. wrong labels) by raising their temperature, so the
final instance sigma is a noisy-label score (higher = more likely corrupted).

The weight decay of the data parameters lives in the loss and covers only the
parameters of the current minibatch, and the data parameters have their own momentum
SGD that leaves untouched every entry whose gradient is exactly zero this step (an
entry not in the minibatch keeps its value AND its momentum, so it does not keep drifting
between its visits). After every step log sigma is clamped to [log 1/20, log 20].
Evaluation uses the raw logits: the temperatures exist only in the training loss.
"""

import math

import torch
import torch.nn.functional as F

LOG_SIGMA_MIN, LOG_SIGMA_MAX = math.log(1 / 20), math.log(20)


class SparseSGD(torch.optim.Optimizer):
    """Momentum SGD that skips every entry whose gradient is exactly zero.

    For entries with ``grad != 0``: ``buf = momentum * buf + grad; p -= lr * buf``
    (the first touch starts from ``buf = grad``, as torch's SGD does). Entries with
    ``grad == 0`` keep both their value and their momentum buffer. No weight decay: the
    data parameters' decay is a term of the loss over the minibatch only.
    """

    def __init__(self, params, lr, momentum=0.9):
        if lr < 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr >= 0 and momentum in [0, 1), got {lr}, {momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                touched = p.grad != 0
                buf.copy_(torch.where(touched, group["momentum"] * buf + p.grad, buf))
                p.sub_(torch.where(touched, group["lr"] * buf, torch.zeros_like(p)))


class DataParameters:
    """Class and/or instance temperatures in log space, with their optimisers.

    Parameters
    ----------
    num_samples : int
        N, the size of the training set the instance parameters index (positions 0..N-1).
    num_classes : int
        C.
    labels : long tensor (N,)
        The observed training labels: sample i uses class parameter ``labels[i]``.
    learn_class, learn_instance : bool
        Which groups exist. With neither, sigma* = 1 and the loss is plain cross-entropy.
    init_class, init_instance : float > 0
        Initial sigma of every entry (the log is stored).
    lr_class, lr_instance : float
        Learning rates of the two sparse SGD optimisers.
    wd_class, wd_instance : float
        In-loss weight decay 0.5 * wd * sum over the minibatch of (log sigma)^2.
    momentum : float
    """

    def __init__(self, num_samples, num_classes, labels, *, learn_class=False,
                 learn_instance=True, init_class=1.0, init_instance=1.0, lr_class=0.1,
                 lr_instance=0.1, wd_class=0.0, wd_instance=0.0, momentum=0.9):
        if init_class <= 0 or init_instance <= 0:
            raise ValueError(f"initial sigma must be > 0, got {init_class}, {init_instance}")
        if len(labels) != num_samples:
            raise ValueError(f"labels has {len(labels)} entries, expected {num_samples}")
        device = labels.device
        self.labels = labels
        self.wd_class, self.wd_instance = wd_class, wd_instance
        self.class_log = self.instance_log = None
        self.optimizers = []
        if learn_class:
            self.class_log = torch.full((num_classes,), math.log(init_class), device=device,
                                        requires_grad=True)
            self.optimizers.append(SparseSGD([self.class_log], lr=lr_class, momentum=momentum))
        if learn_instance:
            self.instance_log = torch.full((num_samples,), math.log(init_instance),
                                           device=device, requires_grad=True)
            self.optimizers.append(SparseSGD([self.instance_log], lr=lr_instance,
                                             momentum=momentum))

    @property
    def active(self):
        return self.class_log is not None or self.instance_log is not None

    def sigma(self, idx):
        """sigma* (tensor (B,)) of the samples at positions ``idx``; differentiable."""
        out = torch.zeros(len(idx), device=self.labels.device)
        if self.class_log is not None:
            out = out + self.class_log[self.labels[idx]].exp()
        if self.instance_log is not None:
            out = out + self.instance_log[idx].exp()
        return out if self.active else out + 1.0

    def loss(self, logits, idx):
        """Batch-mean cross-entropy of ``logits / sigma*`` on the observed labels, plus the
        in-loss weight decay of this minibatch's data parameters; ``idx`` (B,) positions."""
        y = self.labels[idx]
        if not self.active:
            return F.cross_entropy(logits, y)
        loss = F.cross_entropy(logits / self.sigma(idx)[:, None], y)
        if self.class_log is not None and self.wd_class:
            loss = loss + 0.5 * self.wd_class * self.class_log[y].pow(2).sum()
        if self.instance_log is not None and self.wd_instance:
            loss = loss + 0.5 * self.wd_instance * self.instance_log[idx].pow(2).sum()
        return loss

    @torch.no_grad()
    def clamp_(self):
        """Keep every sigma in [1/20, 20]; run after every optimiser step."""
        for p in (self.class_log, self.instance_log):
            if p is not None:
                p.clamp_(LOG_SIGMA_MIN, LOG_SIGMA_MAX)

    def instance_sigma(self):
        """(N,) numpy array of exp(s_i), or None without instance parameters."""
        return None if self.instance_log is None else self.instance_log.detach().exp().cpu().numpy()

    def class_sigma(self):
        """(C,) numpy array of exp(c), or None without class parameters."""
        return None if self.class_log is None else self.class_log.detach().exp().cpu().numpy()

    def state_dict(self):
        state = {"optimizers": [opt.state_dict() for opt in self.optimizers]}
        for name in ("class_log", "instance_log"):
            if getattr(self, name) is not None:
                state[name] = getattr(self, name).detach().clone()
        return state

    def load_state_dict(self, state):
        for name in ("class_log", "instance_log"):
            mine = getattr(self, name)
            if (mine is None) != (name not in state):
                raise ValueError(f"checkpoint and data parameters disagree about {name}")
            if mine is not None:
                with torch.no_grad():
                    mine.copy_(state[name])
        for opt, opt_state in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
