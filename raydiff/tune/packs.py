"""Packs of trial specs: the configs of one stage that train as one computation.

A stage whose experiment defines ``run_pack(configs, reports, data)`` and ``PACK_KEYS``
has its planned trial specs grouped before its Tuner starts: specs equal on every key
except the experiment's ``PACK_KEYS`` (the stackable ones: seed, noise, subsets, folds,
rates ...), with the same upstream structure (the same experiments consumed, one run or
a list each: the run ids themselves may differ, an imbalance pack spans many identify
runs) and each accepted by the experiment's ``packable(config)`` (no CNN, no augment, ...)
share a pack. One Tune trial trains a pack; every config keeps its own MLflow run.

Sizing, the sweep key ``pack`` (top level or per stage) or ``raydiff run --pack N``:

- an int N >= 1: at most N configs per pack (1: one config per trial, the old way);
- ``auto`` (default): as many as fit a memory budget, counting each config's models
  (``PACK_MODELS(config)``, e.g. an imbalance cell trains ``models_per_cell``) times an
  estimate of one SimpleNN's training memory (:func:`model_bytes`), capped at
  :data:`CPU_MAX_MODELS` models on CPU. On a GPU stage the budget is half of the free
  memory of the driver's first CUDA device (``torch.cuda.mem_get_info``) times the
  stage's ``gpu`` fraction, capped at :data:`GPU_MAX_MODELS` models; a driver that sees
  no CUDA device (a CPU head node) sizes GPU stages by the CPU rule.
"""

import hashlib

from raydiff.experiments.config import ConfigError
from raydiff.tune.describe import canonical
from raydiff.tune.spec import PackSpec

AUTO = "auto"
CPU_MAX_MODELS = 64              # one trial's cores stay busy; a failure costs little
CPU_BUDGET_BYTES = 2 << 30
GPU_MAX_MODELS = 4096
PACK_TAG, PACK_SIZE_TAG = "raydiff.pack", "raydiff.pack_size"


def check_pack(value, where):
    """``value`` of a ``pack`` key, checked: an int >= 1 or "auto" (ConfigError naming
    ``where``, the key's place, otherwise)."""
    if value == AUTO:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where} must be an int >= 1 (configs per trial; 1 = one "
                          f"config per trial) or 'auto', got {value!r}")
    return value


def can_pack(module):
    return hasattr(module, "run_pack") and hasattr(module, "PACK_KEYS")


def group_key(spec, module, config):
    """What specs must share to share a pack: every config key outside ``PACK_KEYS`` and
    the shape of their upstream (which experiments, one run or a list)."""
    fixed = {k: v for k, v in config.items() if k not in module.PACK_KEYS}
    shape = {exp: isinstance(ids, list) for exp, ids in spec.upstream.items()}
    return canonical([spec.experiment, fixed, shape])


def model_bytes(config, *, n_samples, n_features, num_classes):
    """Rough bytes one SimpleNN of ``config`` takes while it trains in a pack: float32
    activations, their gradients and logits over every sample (full batch: the worst
    case), its parameters three times (weights, step, a monitor snapshot per class) and,
    when the experiment records the per-epoch logits, that trajectory."""
    hidden = list(config.get("hidden") or [20, 20])
    widths = [n_features, *hidden, num_classes]
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    per_sample = 3 * sum(hidden) + 3 * num_classes
    record = num_classes * int(config.get("epochs", 1)) if config.get("record_logits") else 0
    return 4 * (n_samples * (per_sample + record) + params * (3 + num_classes))


def budget(resources, *, cuda_free=None):
    """(bytes, models) a pack may take for a stage with ``resources``."""
    gpu = float(resources.get("gpu") or 0)
    if gpu and cuda_free:
        return int(0.5 * cuda_free * min(gpu, 1.0)), GPU_MAX_MODELS
    return CPU_BUDGET_BYTES, CPU_MAX_MODELS


def _cuda_free():
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.mem_get_info(0)[0]
    except Exception:  # noqa: BLE001 - no usable device: the CPU rule
        pass
    return None


def spread(groups, slots):
    """Split the largest packs in halves until there are ``slots`` of them (or every pack
    is one config): ``auto`` packing must not leave slots of the cluster idle that one
    trial per config would have used."""
    groups = [list(g) for g in groups]
    while len(groups) < slots:
        largest = max(range(len(groups)), key=lambda i: len(groups[i]), default=None)
        if largest is None or len(groups[largest]) < 2:
            break
        g = groups.pop(largest)
        groups[largest:largest] = [g[:len(g) // 2 + len(g) % 2], g[len(g) // 2 + len(g) % 2:]]
    return groups


def make_packs(specs, module, configs, size, *, resources=None, shape=None, slots=1):
    """Group ``specs`` (with their resolved ``configs``, same order) into packs.

    size : int >= 1 or "auto"; shape : (n_samples, n_features, num_classes) of the stage's
    data for the ``auto`` budget (None: every config counts as one model of 1 MiB);
    slots : how many of the stage's trials the cluster runs at once (``auto`` makes at
    least that many packs, :func:`spread`).
    Returns a list of lists of spec positions, in the order of the specs' first members;
    a position not packable is a list of its own.
    """
    if size == 1 or not can_pack(module):
        return [[i] for i in range(len(specs))]
    packable = getattr(module, "packable", lambda config: True)
    count = getattr(module, "PACK_MODELS", lambda config: 1)
    groups, order = {}, []
    for i, (spec, config) in enumerate(zip(specs, configs)):
        if not packable(config):
            order.append([i])
            continue
        key = group_key(spec, module, config)
        if key not in groups:
            groups[key] = []
            order.append(groups[key])
        groups[key].append(i)
    if size == AUTO:
        limit_bytes, limit_models = budget(resources or {}, cuda_free=(
            _cuda_free() if (resources or {}).get("gpu") else None))
    out = []
    for members in order:
        current, used_bytes, used_models = [], 0, 0
        for i in members:
            if size == AUTO:
                models = max(1, int(count(configs[i])))
                cost = models * (model_bytes(configs[i], n_samples=shape[0], n_features=shape[1],
                                             num_classes=shape[2]) if shape else 1 << 20)
                full = current and (used_bytes + cost > limit_bytes
                                    or used_models + models > limit_models)
            else:
                models = cost = 0
                full = len(current) >= size
            if full:
                out.append(current)
                current, used_bytes, used_models = [], 0, 0
            current.append(i)
            used_bytes += cost
            used_models += models
        if current:
            out.append(current)
    if size == AUTO:
        packed = [g for g in out if len(g) > 1 or packable(configs[g[0]])]
        alone = [g for g in out if g not in packed]
        out = spread(packed, slots - len(alone)) + alone
        out.sort(key=lambda g: g[0])
    return out


def pack_spec(stage_label, configs, varied):
    """The :class:`~raydiff.tune.spec.PackSpec` of ``configs`` (TrialSpecs, each already
    named): its name says it is a pack and of what, e.g. ``identify pack of 6 (strategy x
    noise)``; ``varied`` maps each varied key to its short label."""
    spans = [label for k, label in varied.items()
             if len({canonical(c.params.get(k)) for c in configs}) > 1]
    what = f" ({' x '.join(spans)})" if spans else ""
    params = {}
    for k in varied:
        values = {canonical(c.params.get(k)) for c in configs}
        params[k] = configs[0].params.get(k) if len(values) == 1 else f"{len(values)} values"
    digest = hashlib.sha1(canonical([c.name for c in configs]).encode()).hexdigest()[:8]
    return PackSpec(configs[0].stage, configs[0].experiment,
                    f"{stage_label} pack of {len(configs)}{what}", params, list(configs), digest)


def is_pack(spec):
    return isinstance(spec, PackSpec)
