"""Sweep files: parse, validate and expand into trial specs, before Ray starts.

A sweep is either one stage (top-level ``experiment`` + ``config``) or named ``stages``,
each running one experiment over the cartesian product of its ``{grid: [...]}`` axes and
``{cases: [...]}`` axes (a union of small grids: each case a mapping of keys, whose
values may be grids themselves, e.g. uniform noise at four ratios plus pair noise at two). A
stage ``after: X`` pairs each of its configs with every trial of stage X whose explicitly
set keys agree, and inherits X's data keys (dataset, subset, noise, seed) it does not set.
"""

import copy
import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from raydiff.experiments import experiments, get_experiment
from raydiff.experiments.config import (COMMON_KEYS, ConfigError, build_config, check_value,
                                        mapping_class, moved_hint, overlay)
from raydiff.tune.packs import AUTO, check_pack
from raydiff.tune.spec import TrialRecord, TrialSpec

TOP_KEYS = {"name", "description", "experiment", "config", "stages", "resources",
            "max_failures", "num_samples", "max_trials", "search", "pack"}
STAGE_KEYS = {"experiment", "config", "after", "search", "resources", "description", "pack"}
RESOURCE_KEYS = {"cpu", "gpu"}
SEARCH_KEYS = {"metric", "mode", "num_samples", "algorithm"}
SEARCH_ALGORITHMS = ["optuna", "random"]
AXES = {"grid", "choice"}
CASES = "cases"          # {cases: [{key: value or {grid: [...]}, ...}, ...]} under a free name
DISTRIBUTIONS = {"uniform", "loguniform", "randint"}
DEFAULT_MAX_TRIALS = 5000


@dataclass
class Stage:
    name: str
    experiment: str
    config: dict                     # key -> fixed value or {axis: [...]}
    after: list = field(default_factory=list)
    search: dict | None = None
    resources: dict = field(default_factory=dict)
    shared_keys: set = field(default_factory=set)   # keys that came from the shared config
    pack: int | str = "auto"         # configs per trial (raydiff.tune.packs), or "auto"

    @property
    def module(self):
        return get_experiment(self.experiment)


@dataclass
class Sweep:
    name: str
    description: str
    stages: list                     # Stage, in dependency order
    resources: dict
    max_failures: int
    num_samples: int
    max_trials: int
    raw: dict                        # the resolved file (after --set / --smoke)
    ignored: dict = field(default_factory=dict)   # shared key -> stages whose experiment lacks it

    def stage(self, name):
        return next(s for s in self.stages if s.name == name)

    @property
    def after(self):
        """{stage name: [names of the stages it reads]}: the graph the runner schedules."""
        return {s.name: list(s.after) for s in self.stages}


def _fail(msg):
    raise ConfigError(msg)


def is_axis(value):
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in AXES | DISTRIBUTIONS


def _is_cases(value):
    return isinstance(value, dict) and len(value) == 1 and CASES in value


def case_points(value):
    """The configs of a ``{cases: [...]}`` axis: each case expanded over its own grids, in
    order, repeats dropped (a ``--set`` can make two cases equal)."""
    points = []
    for case in value[CASES]:
        fixed = {k: v for k, v in case.items() if not is_axis(v)}
        grids = {k: v["grid"] for k, v in case.items() if is_axis(v)}
        for combo in itertools.product(*grids.values()):
            point = {**fixed, **dict(zip(grids, combo))}
            if point not in points:
                points.append(point)
    return points


def _case_keys(value):
    return {k for case in value[CASES] if isinstance(case, dict) for k in case}


def _parse_value(text):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw, overrides):
    """Apply ``--set key=value`` (or ``stage.key=value``) overrides to a raw sweep dict.

    A plain key is replaced wherever the sweep sets it (shared config, every stage and
    inside every ``cases`` axis that sets it); where it is set nowhere, it joins the shared
    config. Values are parsed as YAML.
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            _fail(f"--set {item!r}: expected key=value (e.g. --set dataset=mnist5k)")
        key, text = item.split("=", 1)
        key, value = key.strip(), _parse_value(text)
        stages = raw.get("stages") or {}
        if "." in key:
            stage, key = key.split(".", 1)
            if stage not in stages:
                _fail(f"--set {item!r}: no stage {stage!r}; stages: {sorted(stages)}")
            stages[stage].setdefault("config", {})[key] = value
            continue
        places = [raw.setdefault("config", {})] + [s.setdefault("config", {}) for s in stages.values()
                                                    if isinstance(s, dict)]
        hit = [p for p in places if isinstance(p, dict) and key in p]
        for place in hit:
            place[key] = value
        cases = [case for p in places if isinstance(p, dict) for axis in p.values()
                 if _is_cases(axis) and isinstance(axis[CASES], list)
                 for case in axis[CASES] if isinstance(case, dict) and key in case]
        for case in cases:
            case[key] = value
        if not hit and not cases:
            places[0][key] = value
    return raw


def _check_resources(res, where):
    if not isinstance(res, dict):
        _fail(f"{where}: resources must be a mapping like {{cpu: 1, gpu: 0.25}}, got {res!r}")
    for key, value in res.items():
        if key not in RESOURCE_KEYS:
            _fail(f"{where}: unknown resources key {key!r}; valid keys: {sorted(RESOURCE_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            _fail(f"{where}: resources.{key} must be a number >= 0, got {value!r}")
        if key == "gpu" and value > 1 and value != int(value):
            _fail(f"{where}: resources.gpu={value}: fractions must be <= 1 (or a whole number)")
    if res.get("cpu", 1) == 0 and res.get("gpu", 0) == 0:
        _fail(f"{where}: resources ask for nothing; give cpu > 0 or gpu > 0")
    return {"cpu": res.get("cpu", 1), "gpu": res.get("gpu", 0)}


def _check_search(search, where):
    if not isinstance(search, dict):
        _fail(f"{where}: search must be a mapping with keys {sorted(SEARCH_KEYS)}")
    for key in search:
        if key not in SEARCH_KEYS:
            _fail(f"{where}: unknown search key {key!r}; valid keys: {sorted(SEARCH_KEYS)}")
    if not isinstance(search.get("metric"), str):
        _fail(f"{where}: search.metric must name the metric to optimise")
    if search.get("mode", "max") not in ("min", "max"):
        _fail(f"{where}: search.mode must be min or max, got {search.get('mode')!r}")
    n = search.get("num_samples", 25)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        _fail(f"{where}: search.num_samples must be an int >= 1, got {n!r}")
    algorithm = search.get("algorithm", "optuna")
    if algorithm not in SEARCH_ALGORITHMS:
        _fail(f"{where}: search.algorithm={algorithm!r}; valid: {SEARCH_ALGORITHMS}")
    return {"metric": search["metric"], "mode": search.get("mode", "max"), "num_samples": n,
            "algorithm": algorithm}


def _check_config(cls, config, where, *, search):
    if not isinstance(config, dict):
        _fail(f"{where}: config must be a mapping of key: value, got {type(config).__name__}")
    for key, value in config.items():
        if not isinstance(key, str):
            _fail(f"{where}: config keys must be strings, got {key!r}")
        if _is_cases(value):
            _check_cases(cls, config, key, value, where)
            continue
        if isinstance(value, dict) and not is_axis(value) and not mapping_class(cls, key):
            _fail(f"{where}.{key}: {value!r} is not a value or an axis; axes are "
                  f"{{grid: [...]}}, {{choice: [...]}} or {{cases: [{{key: value}}, ...]}}"
                  + (" or {uniform|loguniform|randint: [lo, hi]}" if search else ""))
        if is_axis(value):
            (kind, values), = value.items()
            if kind in DISTRIBUTIONS:
                if not search:
                    _fail(f"{where}.{key}: {kind} axes need a `search:` block in the stage")
                if (not isinstance(values, list) or len(values) != 2
                        or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                   for v in values) or values[0] > values[1]):
                    _fail(f"{where}.{key}: {kind} needs [low, high] numbers, got {values!r}")
                if kind == "loguniform" and values[0] <= 0:
                    _fail(f"{where}.{key}: loguniform bounds must be > 0, got {values!r}")
                candidates = [int(v) if kind == "randint" else float(v) for v in values]
            else:
                if not isinstance(values, list) or not values:
                    _fail(f"{where}.{key}: a {kind} axis needs a non-empty list, got {values!r}")
                candidates = values
            for v in candidates:
                check_value(cls, key, v, where)
        else:
            check_value(cls, key, value, where)


def _case_list(value, where):
    cases = value[CASES]
    if not isinstance(cases, list) or not cases or not all(
            isinstance(c, dict) and c for c in cases):
        _fail(f"{where}: cases needs a non-empty list of non-empty mappings "
              f"(key: value or {{grid: [...]}}), got {cases!r}")
    return cases


def _check_cases(cls, config, name, value, where):
    """A ``{cases: [...]}`` axis: a free name (not a key), a non-empty list of non-empty
    mappings of known keys to values or grids, keys set nowhere else in the config."""
    fields = {f.name for f in dataclasses.fields(cls)}
    if name in fields:
        _fail(f"{where}.{name}: a cases axis needs a name that is not a config key (e.g. "
              f"`noise:`), since it sets several keys")
    cases = _case_list(value, f"{where}.{name}")
    for i, case in enumerate(cases):
        for key, v in case.items():
            if key in config:
                _fail(f"{where}.{name}.cases[{i}]: {key} is also set in the config; set it "
                      f"in one place")
            others = [n for n, a in config.items() if n != name and _is_cases(a)
                      and key in _case_keys(a)]
            if others:
                _fail(f"{where}.{name}.cases[{i}]: {key} is also set by cases {others[0]!r}")
            if isinstance(v, dict) and not (mapping_class(cls, key) and not is_axis(v)):
                if not (is_axis(v) and "grid" in v and isinstance(v["grid"], list) and v["grid"]):
                    _fail(f"{where}.{name}.cases[{i}].{key}: inside a case a value is fixed or "
                          f"{{grid: [non-empty list]}}, got {v!r}")
                for item in v["grid"]:
                    check_value(cls, key, item, f"{where}.{name}.cases[{i}]")
            else:
                check_value(cls, key, v, f"{where}.{name}.cases[{i}]")


def validate(raw, *, source="sweep"):
    """Check a raw sweep dict and return a :class:`Sweep`; ConfigError names the bad key."""
    resources, top_pack = _check_top(raw, source)
    shared = raw.get("config") or {}
    if not isinstance(shared, dict):
        _fail(f"{source}: config must be a mapping of key: value")
    stages = _parse_stages(raw, source, resources, top_pack)
    ignored = _share(stages, shared, source)
    for s in stages.values():
        where = f"{source}: stages.{s.name}.config" if "stages" in raw else f"{source}: config"
        _check_config(s.module.Config, s.config, where, search=s.search is not None)
        _check_after(s, stages, source)
    order = _topological(stages, source)
    sweep = Sweep(raw["name"], str(raw.get("description", "")), order, resources,
                  raw.get("max_failures", 0), raw.get("num_samples", 1),
                  raw.get("max_trials", DEFAULT_MAX_TRIALS), raw, ignored)
    _check_size(sweep, source)
    return sweep


def _check_top(raw, source):
    """The top level: known keys, a name, one stage or ``stages``, limits. Returns the
    sweep's (resources, pack)."""
    if not isinstance(raw, dict):
        _fail(f"{source}: a sweep file must be a YAML mapping with at least `name` and "
              f"`experiment` or `stages`, got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_KEYS:
            _fail(f"{source}: unknown top-level key {key!r}; valid keys: {sorted(TOP_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        _fail(f"{source}: name must be a string of letters, digits, '-', '_', '.' "
              f"(it names the MLflow experiment), got {name!r}")
    if ("experiment" in raw) == ("stages" in raw):
        _fail(f"{source}: give either `experiment` (one stage) or `stages`, not "
              f"{'both' if 'experiment' in raw else 'neither'}")
    resources = _check_resources(raw.get("resources", {}), f"{source}: resources")
    for key, minimum in (("max_failures", 0), ("num_samples", 1), ("max_trials", 1)):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < minimum):
            _fail(f"{source}: {key} must be an int >= {minimum}, got {value!r}")
    return resources, check_pack(raw.get("pack", AUTO), f"{source}: pack")


def _parse_stages(raw, source, resources, top_pack):
    """{name: Stage} of the sweep's stages (a one-stage sweep's is ``main``), each checked
    for its keys, experiment, ``after``, search, resources and pack; configs as written."""
    if "experiment" in raw:
        stage_defs = {"main": {"experiment": raw["experiment"], "search": raw.get("search")}}
    else:
        if raw.get("search") is not None:
            _fail(f"{source}: a top-level search belongs inside a stage when `stages` are used")
        stage_defs = raw["stages"]
        if not isinstance(stage_defs, dict) or not stage_defs:
            _fail(f"{source}: stages must be a non-empty mapping of stage name -> stage")
    valid = sorted(experiments())
    stages = {}
    for sname, sdef in stage_defs.items():
        where = f"{source}: stages.{sname}" if "stages" in raw else source
        if not isinstance(sdef, dict):
            _fail(f"{where}: a stage must be a mapping with `experiment` and `config`")
        for key in sdef:
            if key not in STAGE_KEYS:
                _fail(f"{where}: unknown stage key {key!r}; valid keys: {sorted(STAGE_KEYS)}")
        exp = sdef.get("experiment")
        if exp not in valid:
            _fail(f"{where}: unknown experiment {exp!r}; valid experiments: {valid}")
        after = sdef.get("after") or []
        after = [after] if isinstance(after, str) else after
        if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
            _fail(f"{where}: after must name a stage or list stages, got {after!r}")
        search = sdef.get("search")
        search = _check_search(search, f"{where}: search") if search is not None else None
        own = sdef.get("config") if "stages" in raw else {}
        stages[sname] = Stage(sname, exp, own or {}, after, search,
                              _check_resources(sdef.get("resources", resources), f"{where}: resources")
                              if "resources" in sdef else resources)
        stages[sname].pack = (check_pack(sdef["pack"], f"{where}: pack") if "pack" in sdef
                              else top_pack)
    return stages


def _share(stages, shared, source):
    """Give the sweep's shared ``config:`` keys to every stage whose experiment knows them
    (a stage's own value wins). Returns {key: [stages that ignore it]}: the CLI says so,
    since a silently ignored key makes a weaker recipe than the file reads."""
    ignored = {}
    for key in shared:
        if _is_cases(shared[key]):
            _share_cases(stages, key, shared[key], source)
            continue
        knowers = [s for s in stages.values()
                   if key in {f.name for f in dataclasses.fields(s.module.Config)}]
        if not knowers:
            # raises: unknown key (naming where it moved, if a stage has it under figures:)
            classes = [s.module.Config for s in stages.values()]
            any_cls = next((c for c in classes if moved_hint(c, key, None)), classes[0])
            check_value(any_cls, key, shared[key], f"{source}: config")
        for s in knowers:
            s.config = {key: shared[key], **s.config}
            s.shared_keys.add(key)
        if len(knowers) < len(stages):
            ignored[key] = [s.name for s in stages.values() if s not in knowers]
    return ignored


def _check_after(stage, stages, source):
    """``after:`` names existing stages whose experiments ``stage`` can read, and a stage
    whose experiment reads an earlier one has an ``after:``."""
    takes = set(getattr(stage.module, "CONSUMES", ())) | set(getattr(stage.module, "GATHERS", ()))
    for up in stage.after:
        if up not in stages:
            _fail(f"{source}: stages.{stage.name}.after names a missing stage {up!r}; "
                  f"stages: {sorted(stages)}")
        if stages[up].experiment not in takes:
            _fail(f"{source}: stages.{stage.name} ({stage.experiment}) cannot take the result of "
                  f"stage {up!r} ({stages[up].experiment}); it takes: {sorted(takes) or 'none'}")
    if takes and not stage.after:
        _fail(f"{source}: stages.{stage.name} ({stage.experiment}) needs `after:` naming a "
              f"stage that runs one of {sorted(takes)}")


def _check_size(sweep, source):
    """At most ``max_trials`` trials, per stage and in all."""
    for stage in sweep.stages:     # a first stage's count is exact without the (slower) full plan
        n = 0 if stage.after else own_count(stage, sweep.num_samples)
        if n > sweep.max_trials:
            _fail(f"{source}: stage {stage.name} alone expands to {n} trials, over max_trials="
                  f"{sweep.max_trials}; shrink the grid or raise max_trials in the sweep file")
    counts = planned_counts(sweep)
    total = sum(counts.values())
    if total > sweep.max_trials:
        _fail(f"{source}: the sweep expands to {total} trials ({counts}), over max_trials="
              f"{sweep.max_trials}; shrink the grid or raise max_trials in the sweep file")


def _share_cases(stages, name, value, source):
    """A shared ``cases`` axis goes to every stage whose experiment knows all its keys;
    a key the stage sets itself wins over the cases' (as a stage's own keys always do)."""
    _case_list(value, f"{source}: config.{name}")
    keys = _case_keys(value)
    knowers = [s for s in stages.values()
               if keys <= {f.name for f in dataclasses.fields(s.module.Config)}]
    if not knowers:
        _fail(f"{source}: config.{name}: no stage's experiment knows all of the keys its cases "
              f"set ({sorted(keys)})")
    for s in knowers:
        own = (set(s.config) - s.shared_keys) & keys
        cases = [{k: v for k, v in case.items() if k not in own} for case in value[CASES]]
        cases = [c for c in cases if c]
        if cases:
            s.config = {name: {CASES: cases}, **s.config}
            s.shared_keys.update(keys - own)


def _topological(stages, source):
    from raydiff.tune.graph import order

    return [stages[name] for name in order({n: s.after for n, s in stages.items()}, source)]


def load(path, *, overrides=(), smoke=False):
    """Read, override, shrink (``smoke``) and validate the sweep file at ``path``."""
    path = Path(path)
    if not path.is_file():
        _fail(f"sweep file {str(path)!r} does not exist; the sweeps/ folder has the shipped ones")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        _fail(f"{path}: not valid YAML: {exc}")
    raw = apply_overrides(raw, overrides) if isinstance(raw, dict) else raw
    sweep = validate(raw, source=str(path))
    if smoke:
        # a key the user sets with --set keeps that value: --smoke shrinks the rest
        named = {o.split("=", 1)[0].strip() for o in overrides}
        raw = copy.deepcopy(sweep.raw)
        for stage in sweep.stages:
            target = (raw["stages"][stage.name] if "stages" in raw else raw).setdefault("config", {})
            cls = stage.module.Config
            for key, value in cls.smoke_overrides().items():
                if key not in named and f"{stage.name}.{key}" not in named:
                    target[key] = overlay(cls, key, target.get(key), value)
        sweep = validate(raw, source=f"{path} (smoke)")
    return sweep


def ignored_lines(sweep):
    """One line per group of stages that ignore top-level ``config:`` keys, naming the
    keys and those stages (with their experiments)."""
    groups = {}
    for key, names in sweep.ignored.items():
        groups.setdefault(tuple(names), []).append(key)
    return [f"raydiff: note: config key{'s' if len(keys) > 1 else ''} "
            + ", ".join(repr(k) for k in keys)
            + f" {'are' if len(keys) > 1 else 'is'} ignored by stage{'s' if len(names) > 1 else ''} "
            + ", ".join(f"{n} ({sweep.stage(n).experiment})" for n in names)
            for names, keys in groups.items()]


# -- expansion --------------------------------------------------------------------------

def expand_own(stage, num_samples=1, seed=0):
    """The stage's own configs: the cartesian product of its grid and cases axes, ``choice``
    axes drawn (seeded) once per sample. Distribution axes (search stages) stay as they are."""
    import numpy as np

    rng = np.random.default_rng(seed)
    fixed, grids, choices, dists, cases = {}, {}, {}, {}, {}
    for key, value in stage.config.items():
        if _is_cases(value):
            cases[key] = case_points(value)
        elif is_axis(value):
            (kind, values), = value.items()
            {"grid": grids, "choice": choices}.get(kind, dists)[key] = values if kind in AXES else value
        else:
            fixed[key] = value
    out = []
    for _ in range(num_samples if choices or not stage.search else 1):
        drawn = {k: v[rng.integers(len(v))] for k, v in choices.items()}
        for combo in itertools.product(*grids.values(), *cases.values()):
            points = {}
            for point in combo[len(grids):]:      # one point of every cases axis
                points.update(point)
            out.append({**fixed, **drawn, **dict(zip(grids, combo)), **points})
    return out, dists


def own_count(stage, num_samples=1):
    """How many configs :func:`expand_own` makes for ``stage``, times its search samples."""
    grids, choices = 1, False
    for value in stage.config.values():
        if _is_cases(value):
            grids *= len(case_points(value))
        elif is_axis(value):
            (kind, values), = value.items()
            grids *= len(values) if kind == "grid" else 1
            choices = choices or kind == "choice"
    samples = num_samples if choices or not stage.search else 1
    return grids * samples * (stage.search["num_samples"] if stage.search else 1)


def resolved(stage, config):
    """The full config (defaults filled in) of ``config`` for ``stage``'s experiment."""
    return dataclasses.asdict(build_config(stage.module.Config, config, f"stages.{stage.name}"))


def _matches(own, up, shared, only=None):
    """An upstream trial matches when it agrees on every key of the sweep's shared config
    and on every data key (COMMON_KEYS) the later stage sets; stage-private keys (each
    stage's own ``epochs``, say) are not compared. ``only``: compare just these keys (an
    experiment's ``MATCH_ONLY``, e.g. one that gathers the runs of every seed and noise
    setting of its data)."""
    return all(up.config.get(k) == v for k, v in own.items()
               if k in up.config and (k in only if only is not None
                                      else k in shared or k in COMMON_KEYS))


# a key and its old name: a config that sets either does not inherit the other
ALIASES = {"hardness": "noise_kind", "noise_kind": "hardness"}


def join(stage, own_configs, upstream_by_stage):
    """Pair each own config with matching upstream trials -> list of
    :class:`~raydiff.tune.spec.TrialSpec` (config: explicit + inherited keys)."""
    gathers = set(getattr(stage.module, "GATHERS", ()))
    specs = []
    for own in own_configs:
        options = []
        for up_name in stage.after:
            ups = upstream_by_stage.get(up_name, [])
            matching = [u for u in ups if _matches(own, u, stage.shared_keys,
                                                   getattr(stage.module, "MATCH_ONLY", None))]
            if ups and ups[0].experiment in gathers:
                options.append([matching] if matching else [])
            else:
                options.append(matching)
        for picked in itertools.product(*options):
            config, params, upstream = dict(own), dict(own), {}
            for up in picked:
                group = up if isinstance(up, list) else [up]
                first = group[0]
                for key in COMMON_KEYS:
                    if key not in own and ALIASES.get(key) not in own and key in first.config:
                        config[key] = first.config[key]
                        params[key] = first.config[key]
                for key, value in first.params.items():
                    if key not in config and "." not in key:
                        params[f"{first.stage}.{key}"] = value
                    elif "." in key:
                        params.setdefault(key, value)
                upstream[first.experiment] = ([u.run_id for u in group] if isinstance(up, list)
                                              else first.run_id)
            specs.append(TrialSpec(stage.name, stage.experiment, config, params, upstream))
    return specs


def plan(sweep):
    """Trial specs per stage if every trial succeeds ({stage name: [spec, ...]})."""
    planned, fake = {}, {}
    for stage in sweep.stages:
        own, _ = expand_own(stage, sweep.num_samples)
        specs = join(stage, own, fake)
        planned[stage.name] = specs
        fake[stage.name] = [TrialRecord(stage.name, stage.experiment,
                                        s.config if stage.search else resolved(stage, s.config),
                                        s.params, f"planned-{i}") for i, s in enumerate(specs)]
    return planned


def planned_counts(sweep):
    """Trials per stage if every trial succeeds (search stages count their samples)."""
    return {stage.name: len(specs) * (stage.search["num_samples"] if stage.search else 1)
            for stage, specs in zip(sweep.stages, plan(sweep).values())}

