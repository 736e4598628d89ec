"""Experiment configs: dataclasses whose fields are the keys a sweep may set.

Field metadata drives validation at the public edge, before Ray starts:
``choices`` (a list, or a zero-argument callable returning one), ``ratio`` (value in
[0, 1]), ``min`` (lower bound). Types come from the annotations.
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


def _datasets():
    from raydiff.data import DATASETS
    return sorted(DATASETS)


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
    noise_ratio: float = ratio(0.0)
    # uniform: a flipped label goes to any other class; pair: class c always to perm(c)
    noise_kind: str = choice("uniform", ["uniform", "pair"])

    # shrunk values for --smoke runs and tests; experiments extend this
    SMOKE: typing.ClassVar[dict] = {"subset_size": 300}

    @classmethod
    def smoke_overrides(cls):
        """The SMOKE values of the class and its bases, for the keys this class has (a
        subclass may drop a key it never uses; see ``vog_toy``)."""
        keys = {f.name for f in dataclasses.fields(cls)}
        out = {}
        for klass in reversed(cls.__mro__):
            out.update(vars(klass).get("SMOKE", {}))
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


def check_value(cls, key, value, where):
    """Raise ConfigError unless ``value`` is valid for field ``key`` of config class ``cls``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {sorted(fields)}")
    tp = typing.get_type_hints(cls)[key]
    if not _type_ok(value, tp):
        raise ConfigError(f"{where}: {key} must be {_type_name(tp)}, got {value!r} "
                          f"({type(value).__name__})")
    meta = fields[key].metadata
    choices = meta.get("choices")
    if choices is not None:
        allowed = choices() if callable(choices) else choices
        if value not in allowed:
            raise ConfigError(f"{where}: {key}={value!r} is not allowed; valid values: {allowed}")
    if meta.get("ratio") and value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{where}: {key}={value!r} is outside [0, 1]")
    if "min" in meta and value is not None and value < meta["min"]:
        raise ConfigError(f"{where}: {key}={value!r} must be >= {meta['min']}")


def build_config(cls, values, where="config"):
    """Validate every key of ``values`` against ``cls`` and return the config instance."""
    for key, value in values.items():
        check_value(cls, key, value, where)
    config = cls(**values)
    check = getattr(config, "check", None)
    if check is not None:
        check(where)
    return config
