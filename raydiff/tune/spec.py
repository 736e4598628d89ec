"""The trial contract: what a sweep's expansion hands Ray Tune, and Tune the trainable.

A stage's configs become :class:`TrialSpec` objects (:func:`raydiff.tune.sweep.join`),
get their run names (:func:`raydiff.tune.describe.name_specs`), may be grouped into a
:class:`PackSpec` (:mod:`raydiff.tune.packs`), and reach the trainable inside Tune's
config as :func:`tune_value` wrote them. A finished trial comes back to the driver as a
:class:`TrialRecord`, which later stages join against.

Words: a pack trains several *configs* (each a TrialSpec with its own MLflow run); the
engine's packed models may each train on a *subset* of the samples.
"""

import dataclasses
from dataclasses import dataclass, field


@dataclass
class TrialSpec:
    """One config of a stage, before defaults are filled in.

    config : the keys the sweep sets for it, plus the data keys inherited from the
        upstream trials it reads (a Tune search adds its drawn values at run time);
    params : its flat params as logged, an upstream stage's own keys prefixed
        ``<stage>.`` (``identify.strategy``);
    upstream : {experiment: run id, or [run ids] for a stage that gathers};
    name : its run name, unique within the stage (``identify strategy=energy seed=1``).
    """
    stage: str
    experiment: str
    config: dict
    params: dict
    upstream: dict = field(default_factory=dict)
    name: str | None = None


@dataclass
class PackSpec:
    """Configs of one stage that train as one Tune trial (:mod:`raydiff.tune.packs`);
    each keeps its own MLflow run. ``params`` hold, for the progress table, each varied
    key's value or how many values the pack spans; ``digest`` names the configs."""
    stage: str
    experiment: str
    name: str
    params: dict
    configs: list            # [TrialSpec]
    digest: str = ""


@dataclass
class TrialRecord:
    """A trial of a stage as the join sees it (planned or finished): its resolved config
    (defaults included), params and MLflow run. Not the artifacts: an experiment reads
    those through :class:`raydiff.experiments.base.Upstream`."""
    stage: str
    experiment: str
    config: dict
    params: dict
    run_id: str | None = None


def tune_value(spec):
    """A spec as it sits in Tune's config under ``trial``: plain data (its fields, and
    ``kind``), which :func:`from_tune` turns back into the spec. Plain, because Tune
    treats any other object in a grid as opaque: it swaps it for a placeholder, resolved
    late, that its naming hooks and progress columns cannot read; and a trial's
    ``trial/params/<key>`` columns read the params from here."""
    data = dataclasses.asdict(spec)
    data["kind"] = "pack" if isinstance(spec, PackSpec) else "trial"
    return data


def from_tune(config):
    """The TrialSpec or PackSpec of a Tune trial's ``config`` (:func:`tune_value`); also
    the plain dicts of sessions started before specs had a ``kind`` (a pack's configs
    under ``pack``, its digest under ``pack_digest``), so that ``--resume`` finishes them."""
    data = dict(config["trial"])
    kind = data.pop("kind", None)
    if kind is None and "pack" in data:
        data["configs"], data["digest"] = data.pop("pack"), data.pop("pack_digest", "")
        kind = "pack"
    if kind == "pack":
        data["configs"] = [TrialSpec(**c) for c in data["configs"]]
        return PackSpec(**data)
    return TrialSpec(**data)
