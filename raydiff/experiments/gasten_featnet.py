"""GASTeN, preparation: the feature network FID is measured in, once per dataset.

``feature_net``: ``inception`` uses InceptionV3 weights found on this machine
(``inception_weights``, ``$RAYDIFF_INCEPTION_WEIGHTS`` or torchvision's cache; every
worker needs them), ``smallcnn`` trains :class:`raydiff.models.gasten.FeatureCNN` on every
class of the dataset's training part (images in [-1, 1], as the GAN makes them), and
``auto`` takes InceptionV3 when its weights are there, else trains the small CNN.
Artifact ``featnet.pt``; the step-2 stage names its FID metric after it (``fid_inception``
for pytorch-fid's TF-FID weights, the papers' network; ``fid_inception_tv`` for
torchvision's ImageNet weights; ``fid_smallcnn``), so numbers of different extractors never
mix.
"""

from dataclasses import dataclass

import torch

from raydiff.data import BATCH_STREAM, INIT_STREAM, derived_seed, torch_generator
from raydiff.engine import train as train_model
from raydiff.engine.fid import find_inception_weights, inception_name
from raydiff.experiments._gasten import prepare_images
from raydiff.experiments.config import Common, at_least, choice, ratio
from raydiff.models.gasten import FeatureCNN

NAME = "gasten_featnet"


@dataclass
class Config(Common):
    feature_net: str = choice("auto", ["auto", "inception", "smallcnn"])
    inception_weights: str | None = None
    epochs: int = at_least(3, 1)
    batch_size: int = at_least(128, 1)
    lr: float = 1e-3
    test_fraction: float = ratio(0.2)

    SMOKE = {"epochs": 1}


def run(config, report, data):
    weights = (find_inception_weights(config.inception_weights)
               if config.feature_net != "smallcnn" else None)
    if config.feature_net == "inception" and weights is None:
        raise FileNotFoundError("feature_net=inception but no InceptionV3 weights are on this "
                                "machine: set inception_weights (or $RAYDIFF_INCEPTION_WEIGHTS) "
                                "to pytorch-fid's TF-FID pt_inception-2015-12-05 file (or "
                                "torchvision's inception_v3 weights), or use feature_net: auto")
    if weights is not None:
        # named for its weights: torchvision's are not the papers' TF-FID Inception
        name = inception_name(weights)
        report.torch("featnet.pt", {"name": name, "weights_path": str(weights)})
        report.tag("raydiff.feature_net", name)
        return {f"feature_net_{name}": 1}

    device = report.device
    tensors, train, test = prepare_images(config, data, device)
    x, y = tensors.x[torch.as_tensor(train, device=device)], tensors.y[torch.as_tensor(train, device=device)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(config.seed, INIT_STREAM))
        net = FeatureCNN(tensors.num_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)

    def on_epoch(epoch, loss):
        report({"train_loss": loss}, step=epoch)

    # BatchNorm cannot train on a last batch of one image: min_batch skips it
    train_model(net, x, y, epochs=config.epochs, optimizers=[opt], on_epoch=on_epoch,
                batch_size=config.batch_size, generator=torch_generator(config.seed, BATCH_STREAM),
                min_batch=2)
    net.eval()
    metrics = {}
    if len(test):
        t = torch.as_tensor(test, device=device)
        with torch.no_grad():
            pred = torch.cat([net(tensors.x[t][i:i + 1024]).argmax(1) for i in range(0, len(t), 1024)])
        metrics["test_accuracy"] = 100.0 * (pred == tensors.y[t]).float().mean().item()
    report.torch("featnet.pt", {"name": "smallcnn", "num_classes": tensors.num_classes,
                                "state_dict": net.state_dict()})
    report.tag("raydiff.feature_net", "smallcnn")
    report(metrics)
    return metrics
