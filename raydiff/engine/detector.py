"""A learnt noisy-label detector over training dynamics (Jia et al. 2023): an LSTM reads
a sample's probability of its label epoch by epoch and outputs the probability that the
label is wrong.

It is trained on a run whose noise is known (planted), then applied to another run. The
input is the sequence ``p_e(label)`` of softmax probabilities of the observed label at
every recorded epoch (as the detector H-CAT ships reads), so a detector trained on one
run applies to any run of the same number of classes or not (the probability is defined
for any C); a run with another number of epochs is a longer or shorter sequence.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class TrajectoryLSTM(nn.Module):
    """LSTM(in_dim -> hidden, ``layers`` layers) over the epochs, then Linear(hidden -> 1)
    on the last step: the logit of "this label is wrong"."""

    def __init__(self, in_dim=1, hidden=64, layers=2):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, seq):                     # (B, E, in_dim) -> (B,)
        out, _ = self.lstm(seq)
        return self.head(out[:, -1]).squeeze(1)


def label_probability_sequences(logits, labels):
    """(N, E, 1) float32 tensor of ``softmax(logits[e, i])[labels[i]]`` from a trajectory
    ``logits`` (E, N, C) (numpy or tensor) and ``labels`` (N,)."""
    logits = torch.as_tensor(np.asarray(logits, dtype=np.float32))
    labels = torch.from_numpy(np.array(labels, dtype=np.int64))
    if logits.ndim != 3 or labels.shape != (logits.shape[1],):
        raise ValueError(f"need logits (E, N, C) and labels (N,), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    p = F.softmax(logits, dim=2).gather(2, labels[None, :, None].expand(len(logits), -1, 1))
    return p[..., 0].T.unsqueeze(2).contiguous()


@dataclass
class DetectorFit:
    model: TrajectoryLSTM
    losses: list            # mean training loss per epoch


def train_detector(seq, noisy, *, seed, epochs=30, hidden=64, layers=2, lr=1e-3,
                   batch_size=256, device="cpu"):
    """Train a :class:`TrajectoryLSTM` on sequences ``seq`` (N, E, F) with known
    ``noisy`` (N,) bool labels: Adam, binary cross-entropy weighted so the two groups
    count equally (the noisy ones are the minority). ``seed`` fixes the initialisation
    and the batch order."""
    noisy = torch.from_numpy(np.array(noisy, dtype=bool))
    if noisy.all() or not noisy.any():
        raise ValueError("the detector needs a training run with both noisy and clean "
                         "samples (a noise ratio strictly between 0 and 1)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = TrajectoryLSTM(seq.shape[2], hidden, layers)
    model = model.to(device)
    x, y = seq.to(device), noisy.float().to(device)
    pos_weight = ((~noisy).sum() / noisy.sum()).float().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(int(seed))
    losses = []
    model.train()
    for _ in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(x), generator=generator).split(batch_size):
            idx = idx.to(device)
            loss = F.binary_cross_entropy_with_logits(model(x[idx]), y[idx],
                                                      pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x))
    return DetectorFit(model, losses)


@torch.no_grad()
def detect(model, seq, *, batch_size=4096):
    """(N,) float32 numpy array: the detector's probability that each label is wrong."""
    model.eval()
    device = next(model.parameters()).device
    out = [torch.sigmoid(model(seq[i:i + batch_size].to(device))).cpu()
           for i in range(0, len(seq), batch_size)]
    return (torch.cat(out) if out else torch.zeros(0)).numpy()
