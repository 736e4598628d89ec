"""What several experiments share: training keys, the watched full-batch training, and
small helpers. An experiment imports this module, never another experiment.

- :class:`TrainConfig`: the keys of the supervised loop (:func:`raydiff.engine.supervised.fit`)
  every classifier experiment takes, so in a benchmark every method trains the same recipe;
- :class:`InversionTraining` and :func:`fit_watched`: the full-batch SimpleNN training
  watched for the inversion point (``identify``, ``inversion``);
- :func:`load_split`, :func:`class_name`.
"""

import typing
from dataclasses import dataclass, field

import numpy as np

from raydiff.data import INIT_STREAM, derived_seed
from raydiff.engine.inversion import RULES, train_with_inversion
from raydiff.engine.supervised import OPTIMIZERS
from raydiff.experiments.config import Common, ConfigError, at_least, choice
from raydiff.models import MODELS, get_model


# sub-draws of BATCH_STREAM (the supervised loop's augmentation draws) for the evaluation
# passes of a trained model, far above the run indices extra models of a trial take
MC_DROPOUT_DRAW = 1001      # the dropout masks of the MC-dropout passes
AUGMENT_DRAW = 1002         # ALLSH's noise augmentation
DETECTOR_DRAW = 1003        # the detector LSTM's initialisation and batch order (INIT_STREAM)


@dataclass
class TrainConfig(Common):
    """The keys of the supervised training loop, shared by every classifier experiment."""

    model: str = choice("small_cnn", lambda: sorted(MODELS))
    hidden: list[int] = field(default_factory=lambda: [20, 20])
    epochs: int = at_least(120, 1)              # the schedule's length
    early_stop: typing.Optional[int] = at_least(None, 1)   # stop after this epoch
    batch_size: int = at_least(128, 1)
    optimizer: str = choice("sgd", list(OPTIMIZERS))   # adam: H-CAT's recipe (lr 1e-3)
    lr: float = 0.1
    momentum: float = 0.9                       # sgd only
    weight_decay: float = 5e-4
    lr_milestones: list[int] = field(default_factory=lambda: [80, 100])
    lr_gamma: float = 0.1
    augment: bool = False                       # random crop (pad 4) + flip, on the device
    normalize: str = choice("scalar", ["scalar", "minus_one_one", "none"])
    checkpoint_every: int = at_least(1, 1)
    eval_batch_size: int = at_least(1024, 1)    # no-grad evaluation; bounds its GPU memory

    SMOKE = {"epochs": 2, "batch_size": 64, "model": "simple_nn", "lr_milestones": []}

    @property
    def last_epoch(self):
        return min(self.epochs, self.early_stop or self.epochs)


@dataclass
class InversionTraining(Common):
    """Keys of the full-batch SimpleNN training watched for the inversion point, shared by
    every experiment that finds stragglers (``identify``, ``inversion``)."""

    model: str = choice("simple_nn", lambda: sorted(MODELS))
    hidden: list[int] = field(default_factory=lambda: [20, 20])
    epochs: int = at_least(500, 1)
    lr: float = 0.1
    inversion_start: int = at_least(20, 0)
    check_every: int = at_least(5, 1)
    max_retries: int = at_least(2, 0)
    inversion_rule: str = choice("minimum", list(RULES))
    inversion_smoothing: int = at_least(5, 1)
    judge_by_final_model: bool = False
    record_every: int = at_least(0, 0)
    subset_size: int | None = at_least(20000, 10)

    # 40 epochs are too few for the radii to turn, so a smoke run judges by the final
    # model and every class gets a count: a smoke run checks the plumbing (downstream
    # stages get a hard set), not the science
    SMOKE = {"epochs": 40, "inversion_start": 5, "check_every": 2, "judge_by_final_model": True}

    def check(self, where):
        if self.inversion_smoothing % 2 == 0:
            raise ConfigError(
                f"{where}: inversion_smoothing = {self.inversion_smoothing}: expected an odd "
                f"number of epochs (a centred moving average; 1 = no smoothing)")
        if self.inversion_start + self.check_every > self.epochs:
            raise ConfigError(
                f"{where}: inversion_start + check_every = "
                f"{self.inversion_start} + {self.check_every} > epochs = {self.epochs}: "
                f"no inversion check would ever run; raise epochs or lower inversion_start "
                f"or check_every")
        if self.inversion_rule == "minimum":
            need = self.inversion_start + self.inversion_smoothing // 2 + self.check_every
            if need > self.epochs:
                raise ConfigError(
                    f"{where}: inversion_start + inversion_smoothing // 2 + check_every = "
                    f"{need} > epochs = {self.epochs}: no minimum could count as an "
                    f"inversion; raise epochs or lower inversion_start, "
                    f"inversion_smoothing or check_every")

    def hidden_layers(self):
        return self.hidden



def fit_watched(config, data, report=None, *, track_learning=False):
    """Train ``config.model`` on ``data`` (TensorData) while the radii are watched,
    retrying with a new initialisation while a class never inverts (at most
    ``config.max_retries`` times); returns the :class:`InversionRun` kept. The loss goes
    to ``report`` as ``loss`` (``loss_retry<k>`` for the k-th new initialisation)."""

    def make_model(attempt):
        return get_model(config.model, input_shape=data.x.shape[1:],
                         num_classes=data.num_classes, hidden=config.hidden_layers(),
                         seed=derived_seed(config.seed, INIT_STREAM, attempt)).to(data.x.device)

    def on_epoch(epoch, loss, attempt):
        if report is not None:
            report({"loss" if attempt == 0 else f"loss_retry{attempt}": loss}, step=epoch)

    return train_with_inversion(
        make_model, data.x, data.y, data.num_classes, epochs=config.epochs, lr=config.lr,
        start=config.inversion_start, check_every=config.check_every,
        max_retries=config.max_retries, track_learning=track_learning, on_epoch=on_epoch,
        record_every=config.record_every, rule=config.inversion_rule,
        smoothing=config.inversion_smoothing)



def load_split(upstream):
    """(test sample ids, val sample ids) of a data_params trial (its ``split.json``)."""
    split = upstream.json("split.json")
    return np.asarray(split["test_sample_id"], dtype=np.int64), np.asarray(
        split["val_sample_id"], dtype=np.int64)


def class_name(data, c):
    """``class c`` plus the dataset's name for it, when it has names."""
    names = getattr(data, "class_names", None) or []
    return f"class {c}" + (f" ({names[c]})" if c < len(names) else "")
