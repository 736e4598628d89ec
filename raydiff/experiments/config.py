"""Experiment configs: dataclasses whose fields are the keys a sweep may set.

Field metadata drives validation at the public edge, before Ray starts:
``choices`` (a list, or a zero-argument callable returning one), ``ratio`` (value in
[0, 1]), ``min`` (lower bound), ``mapping`` (a nested config class: the field is a mapping
of that class's keys, validated key by key). Types come from the annotations.

Display-only keys (how many thumbnails, which classes get an image grid) are not the
experiment's science: they live in one ``figures:`` mapping (a :class:`Figures` subclass,
declared with :func:`figures`), so a Config's own fields are exactly the keys that change
what is computed and logged as numbers and tables.
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A sweep or trial config is invalid; the message names the key and the fix."""


def choice(default, choices, **kw):
    return field(default=default, metadata={"choices": choices, **kw})


def ratio(default):
    return field(default=default, metadata={"ratio": True})


def at_least(default, minimum):
    return field(default=default, metadata={"min": minimum})


def figures(cls):
    """The ``figures`` field of a Config: a mapping of the display keys of ``cls`` (a
    :class:`Figures` subclass). A sweep writes ``figures: {strip_size: 5}``; unset keys keep
    their defaults; ``figures: false`` is short for ``figures: {enabled: false}``."""
    return field(default_factory=cls, metadata={"mapping": cls})


@dataclass
class Figures:
    """Display-only keys of an experiment: they change which figures a trial draws and how
    they look, never a metric or a table. ``enabled: false`` draws none of them."""

    enabled: bool = True


def _datasets():
    from raydiff.data import DATASETS
    return sorted(DATASETS)


def _hardness_kinds():
    from raydiff.data import HARDNESS_KINDS
    return list(HARDNESS_KINDS)


@dataclass
class Common:
    """Keys every experiment has: what data, which subset, what noise, which seed.

    A later stage inherits these from the earlier stage it consumes unless it sets them
    itself, so both stages see exactly the same samples and labels.
    """

    seed: int = 0
    dataset: str = choice("mnist5k", _datasets)
    data_root: typing.Optional[str] = None
    download: bool = False
    image_size: int = at_least(64, 8)
    subset_size: typing.Optional[int] = at_least(None, 10)
    subset_seed: int = 0
    # the proportion p of samples made hard, int(p * N) of the subset, for every kind
    noise_ratio: float = ratio(0.0)
    # the kind of hardness (docs/hardness.md): a label kind (uniform, pair, asymmetric,
    # adjacent, class_map, instance) or an image kind (near_ood, far_ood, zoom, shift)
    hardness: typing.Optional[str] = choice(None, _hardness_kinds)
    # the old name of hardness, kept as an alias (set one of them); after construction
    # both hold the resolved kind, so runs that group by noise_kind still read it
    noise_kind: typing.Optional[str] = choice(None, _hardness_kinds)

    # shrunk values for --smoke runs and tests; experiments extend this
    SMOKE: typing.ClassVar[dict] = {"subset_size": 300}

    def __post_init__(self):
        from raydiff.data import IMAGE_KINDS, class_map_for, resolve_hardness
        try:
            kind = resolve_hardness(self.hardness, self.noise_kind)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.hardness = self.noise_kind = kind
        dataset = getattr(self, "dataset", None)
        if kind == "class_map":
            try:
                class_map_for(dataset)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if kind in IMAGE_KINDS and dataset == "blobs":
            raise ConfigError(f"hardness {kind!r} perturbs images; dataset 'blobs' has none "
                              f"(pick a label kind, or an image dataset)")

    @classmethod
    def smoke_overrides(cls):
        """The SMOKE values of the class and its bases, for the keys this class has (a
        subclass may drop a key it never uses; see ``vog_toy``)."""
        keys = {f.name for f in dataclasses.fields(cls)}
        out = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).get("SMOKE", {}).items():
                out[key] = overlay(cls, key, out.get(key), value) if key in keys else value
        return {k: v for k, v in out.items() if k in keys}


COMMON_KEYS = tuple(f.name for f in dataclasses.fields(Common))


_UNIONS = (typing.Union, types.UnionType)  # Optional[int] and int | None


def _type_ok(value, tp):
    origin = typing.get_origin(tp)
    if origin in _UNIONS:
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (not args or all(
            _type_ok(v, args[0]) for v in value))
    if tp is typing.Any:
        return True
    return isinstance(value, tp)


def _type_name(tp):
    if typing.get_origin(tp) in _UNIONS:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def mapping_class(cls, key):
    """The nested config class of field ``key`` of ``cls`` if it is a mapping field
    (``figures``), else None."""
    for f in dataclasses.fields(cls):
        if f.name == key:
            return f.metadata.get("mapping")
    return None


def moved_hint(cls, key, value):
    """'<key>' moved under '<field>:' (with an example) when ``key`` is no longer a key of
    ``cls`` but one of its mapping fields (a flat display key of an older sweep), else None."""
    for f in dataclasses.fields(cls):
        sub = f.metadata.get("mapping")
        if sub is None:
            continue
        inner = {g.name: g for g in dataclasses.fields(sub)}
        if key in inner:
            if value is None or isinstance(value, (dict, list)):    # an axis: show a value
                value = sub().__dict__[key]
            shown = yaml_scalar(value)
            return (f"{key!r} moved under '{f.name}:' ({f.name}: {{{key}: {shown}}}); "
                    f"{f.name} keys: {sorted(inner)}")
    return None


def yaml_scalar(value):
    """``value`` as it would be written in a sweep file (true, null, 0.5, name)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _check_mapping(sub, key, value, where):
    inner = [f.name for f in dataclasses.fields(sub)]
    if isinstance(value, sub):
        return
    if isinstance(value, bool) and "enabled" in inner:
        return                       # figures: false == figures: {enabled: false}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a mapping of {sorted(inner)} "
                          f"(e.g. {key}: {{{inner[-1]}: ...}}), got {value!r}")
    for k, v in value.items():
        if k not in inner:
            raise ConfigError(f"{where}: unknown key '{key}.{k}'; valid keys of {key}: "
                              f"{sorted(inner)}")
        check_value(sub, k, v, where, label=f"{key}.{k}")


def check_value(cls, key, value, where, *, label=None):
    """Raise ConfigError unless ``value`` is valid for field ``key`` of config class ``cls``
    (``label``: the key's name in messages, ``figures.strip_size`` for a nested one)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        moved = moved_hint(cls, key, value)
        if moved:
            raise ConfigError(f"{where}: {moved}")
        raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {sorted(fields)}")
    name = label or key
    meta = fields[key].metadata
    if meta.get("mapping") is not None:
        _check_mapping(meta["mapping"], key, value, where)
        return
    tp = typing.get_type_hints(cls)[key]
    if not _type_ok(value, tp):
        raise ConfigError(f"{where}: {name} must be {_type_name(tp)}, got {value!r} "
                          f"({type(value).__name__})")
    choices = meta.get("choices")
    if choices is not None:
        allowed = choices() if callable(choices) else choices
        # a None default (unset: resolved later, as hardness is) is always allowed
        if value not in allowed and not (value is None and fields[key].default is None):
            raise ConfigError(f"{where}: {name}={value!r} is not allowed; valid values: {allowed}")
    if meta.get("ratio") and value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: {name}={value!r} is outside [0, 1]")
    if "min" in meta and value is not None and value < meta["min"]:
        raise ConfigError(f"{where}: {name}={value!r} must be >= {meta['min']}")


def _mapping_value(sub, value):
    """A validated mapping value (dict, bool shorthand, or instance) as a ``sub`` instance."""
    if isinstance(value, sub):
        return value
    if isinstance(value, bool):
        return sub(enabled=value)
    return sub(**value)


def overlay(cls, key, old, new):
    """``new`` set over ``old`` for key ``key`` of ``cls``: a mapping field merges key by
    key (a smoke run shrinks ``figures.tsne_thumbnails`` and keeps the sweep's other
    display keys, and ``figures: false`` stays off); any other key is replaced."""
    sub = mapping_class(cls, key)
    if sub is None or not isinstance(new, dict):
        return new
    inner = {f.name for f in dataclasses.fields(sub)}
    if isinstance(old, bool):
        old = {"enabled": old}
    if not isinstance(old, dict) or not set(old) <= inner:    # unset, or an axis: replace
        return dict(new)
    return {**old, **new}


def build_config(cls, values, where="config"):
    """Validate every key of ``values`` against ``cls`` and return the config instance."""
    for key, value in values.items():
        check_value(cls, key, value, where)
    values = {k: _mapping_value(mapping_class(cls, k), v) if mapping_class(cls, k) else v
              for k, v in values.items()}
    try:
        config = cls(**values)
    except ConfigError as exc:          # raised while resolving keys (Common.__post_init__)
        raise ConfigError(f"{where}: {exc}") from None
    check = getattr(config, "check", None)
    if check is not None:
        check(where)
    return config
