"""A learnt noisy-label detector (Jia et al. 2023), trained inside the sweep.

Takes the ``dynamics`` runs of its data (``after: dynamics``; it gathers every seed and
noise setting of the same data, :data:`MATCH_ONLY`) and uses two of them:

- the *source*: a run of another seed with planted noise of ``source_noise_kind`` at
  ``source_noise_ratio`` (uniform 0.2 by default), whose noisy samples are therefore
  known; by default the next seed after this trial's own among the runs that qualify
  (cyclically), or ``source_seed``;
- the *target*: the run of this trial's own seed and noise setting, the one it scores.

An LSTM (:mod:`raydiff.engine.detector`) learns, on the source, to tell noisy from clean
samples by the probability of the observed label epoch by epoch (the source's
``dynamics_logits.npy``), then outputs that probability for every target sample. The
registered scores of the ``detector_probs`` input are ``score_<name>`` columns; ``score``
is the detector's probability itself (not H-CAT's 0/1 decision, which leaves AUROC and AP
nothing to rank), ``hard`` the ``top_k(N, noise_ratio)`` highest.

H-CAT ships one detector pretrained on CIFAR-10 at 20 % noise; this one trains on the
same sweep's data and recipe, never on the run it scores, nor on its seed.
"""

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from raydiff.data import INIT_STREAM, derived_seed, resolve_hardness
from raydiff.engine.detector import detect, label_probability_sequences, train_detector
from raydiff.experiments.base import per_sample_table
from raydiff.experiments.common import DETECTOR_DRAW
from raydiff.experiments.config import COMMON_KEYS, Common, ConfigError, at_least, ratio
from raydiff.scores import auroc, compute_all
from raydiff.scores.metrics import detection, top_k_mask

NAME = "detector"
GATHERS = ("dynamics",)
NEEDS_DATA = False
# gathered runs need agree only on the data itself, not on seed or noise: the detector
# trains on one run and scores another
MATCH_ONLY = ("dataset", "subset_size", "subset_seed", "image_size", "data_root")


@dataclass
class Config(Common):
    source_noise_kind: str = "uniform"
    source_noise_ratio: float = ratio(0.2)
    source_seed: int | None = None          # None: the next seed after this trial's own
    # the LSTM's own keys, prefixed so a sweep's shared training keys (hidden, epochs, lr,
    # batch_size of the classifiers) never reach it
    lstm_hidden: int = at_least(64, 1)      # H-CAT's detector: 2 layers of 64
    lstm_layers: int = at_least(2, 1)
    lstm_epochs: int = at_least(30, 1)
    lstm_lr: float = 1e-3
    lstm_batch_size: int = at_least(256, 1)

    SMOKE = {"lstm_epochs": 3}

    def check(self, where):
        if self.source_seed is not None and self.source_seed == self.seed:
            raise ConfigError(f"{where}: source_seed={self.source_seed} is this trial's own "
                              f"seed; the detector must train on another seed's run")
        if not 0.0 < self.source_noise_ratio < 1.0:
            raise ConfigError(f"{where}: source_noise_ratio={self.source_noise_ratio} must "
                              f"be strictly between 0 and 1 (the detector learns from noisy "
                              f"and clean samples)")


def _kind(params):
    """The kind of hardness of a run with ``params`` (older runs name it noise_kind)."""
    return resolve_hardness(params.get("hardness"), params.get("noise_kind"))


def _describe(up):
    p = up.params
    return f"seed={p.get('seed')} {_kind(p)}@{p.get('noise_ratio')}"


def pick_target(config, ups):
    """The gathered run of this trial's own data, seed and noise (every COMMON key both
    have must agree)."""
    own = dataclasses.asdict(config)
    found = [u for u in ups if all(u.params[k] == own[k] for k in COMMON_KEYS
                                   if k in u.params and k in own)]
    if len(found) != 1:
        raise ValueError(f"the detector needs exactly one dynamics run of its own setting "
                         f"(seed={config.seed}, noise {config.noise_ratio}), found "
                         f"{len(found)} among {[_describe(u) for u in ups]}; give the "
                         f"dynamics stage the detector's seed and noise grid, one run each")
    return found[0]


def pick_source(config, ups):
    """The gathered run the detector trains on: another seed, planted noise of the source
    kind and ratio; ``source_seed`` or the next seed after the trial's own (cyclically)."""
    ok = [u for u in ups if _kind(u.params) == config.source_noise_kind
          and u.params.get("noise_ratio") == config.source_noise_ratio
          and u.params.get("seed") != config.seed]
    seeds = sorted({u.params["seed"] for u in ok})
    if config.source_seed is not None:
        seeds = [s for s in seeds if s == config.source_seed]
    if not seeds:
        raise ValueError(f"no dynamics run to train the detector on: it needs a run of "
                         f"another seed than {config.seed} with {config.source_noise_kind} "
                         f"noise at {config.source_noise_ratio}"
                         + (f" and seed {config.source_seed}" if config.source_seed is not None
                            else "")
                         + f"; the dynamics stage has {[_describe(u) for u in ups]}")
    later = [s for s in seeds if s > config.seed]
    seed = later[0] if later else seeds[0]
    picked = [u for u in ok if u.params["seed"] == seed]
    return picked[0]


def _sequences(up):
    table = up.table("per_sample.parquet")
    logits = up.array("dynamics_logits.npy").astype(np.float32)       # (E, N, C)
    return table, label_probability_sequences(logits, table["observed_label"].to_numpy())


def run(config, report, data=None):
    started = time.monotonic()
    ups = report.upstreams("dynamics")
    target, source = pick_target(config, ups), pick_source(config, ups)
    src_table, src_seq = _sequences(source)
    table, seq = _sequences(target)
    src_noisy = src_table["is_noisy"].to_numpy(dtype=bool)
    fitted = train_detector(src_seq, src_noisy,
                            seed=derived_seed(config.seed, INIT_STREAM, DETECTOR_DRAW),
                            epochs=config.lstm_epochs, hidden=config.lstm_hidden,
                            layers=config.lstm_layers, lr=config.lstm_lr,
                            batch_size=config.lstm_batch_size, device=report.device)
    prob = detect(fitted.model, seq)
    observed = table["observed_label"].to_numpy()
    scores = compute_all("detector_probs", prob, observed)
    score = scores["detector"]
    noisy = table["is_noisy"].to_numpy(dtype=bool)
    is_hard = table["is_hard"] if "is_hard" in table.columns else table["is_noisy"]
    report.table("per_sample.parquet", per_sample_table(
        sample_id=table["sample_id"], label=table["label"], observed_label=observed,
        is_noisy=noisy, is_hard=is_hard.to_numpy(dtype=bool), hardness=config.hardness,
        split="train", hard=top_k_mask(score, config.noise_ratio),
        score=score, **{f"score_{k}": v for k, v in scores.items()}))
    report.json("detector.json", {"source_run": source.run_id, "source": source.params,
                                  "target_run": target.run_id, "losses": fitted.losses,
                                  "epochs_in_source": int(src_seq.shape[1]),
                                  "epochs_in_target": int(seq.shape[1])})
    metrics = {"source_seed": source.params["seed"], "final_loss": fitted.losses[-1],
               "source_auroc": auroc(detect(fitted.model, src_seq), src_noisy),
               "seconds": time.monotonic() - started}
    if noisy.any() and not noisy.all():
        metrics.update({f"detect_{k}": v for k, v in
                        detection(score, noisy, config.noise_ratio).items()})
    report(metrics)
    return metrics
