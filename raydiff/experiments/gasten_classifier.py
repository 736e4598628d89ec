"""GASTeN, preparation: the binary classifier whose decision boundary the GAN will stress.

SimpleCNN(``nf``) (or the MLP option) on the (pos, neg) images, Adam, BCE, mini-batches;
5/6 of the training part trains, 1/6 validates; training stops when the validation loss
has not improved for ``patience`` epochs, and the best-validation weights are kept.
Metrics per epoch: train_loss, val_loss, val_accuracy; at the end test_loss and
test_accuracy (percent). Artifact ``classifier.pt``, which the step-2 stage loads.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from raydiff.data import (BATCH_STREAM, INIT_STREAM, SPLIT_STREAM, derived_seed, rng_for,
                          torch_generator)
from raydiff.engine import train as train_model
from raydiff.experiments._gasten import GastenData, binary_data, classifier_state
from raydiff.experiments.config import at_least, choice, ratio
from raydiff.models.gasten import CLASSIFIERS, make_classifier

NAME = "gasten_classifier"


@dataclass
class Config(GastenData):
    classifier: str = choice("cnn", sorted(CLASSIFIERS))
    nf: int = at_least(4, 1)
    epochs: int = at_least(1, 1)
    batch_size: int = at_least(64, 1)
    lr: float = 1e-3
    val_fraction: float = ratio(1 / 6)
    patience: int = at_least(3, 1)

    SMOKE = {"epochs": 2}


@torch.no_grad()
def evaluate(model, x, y, batch_size=2048):
    """(BCE loss, accuracy in percent) of ``model`` on images ``x`` and 0/1 labels ``y``."""
    model.eval()
    p = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train()
    return (F.binary_cross_entropy(p, y).item(),
            100.0 * ((p >= 0.5).float() == y).float().mean().item())


def run(config, report, data):
    device = report.device
    binary = binary_data(config, data, device)
    order = rng_for(config.seed, SPLIT_STREAM).permutation(len(binary.train_y))
    n_val = int(len(order) * config.val_fraction)
    val, train = (torch.as_tensor(np.sort(order[:n_val]), device=device),
                  torch.as_tensor(np.sort(order[n_val:]), device=device))
    x, y = binary.train_x[train], binary.train_y[train]
    xv, yv = binary.train_x[val], binary.train_y[val]
    report.trains_on(binary.train_id[train.cpu().numpy()], binary.class_of(y))

    model = make_classifier(config.classifier, config.nf,
                            seed=derived_seed(config.seed, INIT_STREAM)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    best = {"loss": np.inf, "state": None, "waited": 0}

    def on_epoch(epoch, loss):
        metrics = {"train_loss": loss}
        if len(yv):
            metrics["val_loss"], metrics["val_accuracy"] = evaluate(model, xv, yv)
        report(metrics, step=epoch)
        score = metrics.get("val_loss", metrics["train_loss"])
        if score < best["loss"]:
            best.update(loss=score, waited=0,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})
            return False
        best["waited"] += 1
        return best["waited"] >= config.patience          # early stopping

    # a sigmoid output: BCE on the 0/1 labels, in the engine's mini-batch loop
    epoch = train_model(model, x, y, epochs=config.epochs, optimizers=[opt], on_epoch=on_epoch,
                        loss_fn=lambda p, idx: F.binary_cross_entropy(p, y[idx]),
                        batch_size=config.batch_size,
                        generator=torch_generator(config.seed, BATCH_STREAM)).epochs_run
    if best["state"] is not None:          # None only when every loss was NaN
        model.load_state_dict(best["state"])
    test_loss, test_accuracy = evaluate(model, binary.test_x, binary.test_y)
    report.torch("classifier.pt", classifier_state(model, config.classifier, config.nf))
    metrics = {"test_loss": test_loss, "test_accuracy": test_accuracy, "epochs_run": epoch,
               "n_train": len(y), "n_val": len(yv), "n_test": len(binary.test_y)}
    report(metrics)
    return metrics
