"""What a trial is, in words a researcher reads: run names, progress columns, data digests.

No Ray and no MLflow here: the runner, the trainable and the progress reporter call these
pure functions, so the MLflow run name, Tune's trial name (the progress table and the
dashboard) and the table's columns are built once, the same way, and are unit-tested.
"""

import hashlib
import json
import math

import numpy as np

# short column / run-name labels of long config keys; any other key keeps its name
SHORT = {"noise_ratio": "noise", "noise_kind": "noise_kind",
         "remaining_train_ratio": "remaining", "subset_size": "n",
         "models_per_cell": "models", "checkpoint_epoch": "ckpt_epoch"}

# the metric a researcher looks at first, per experiment (a search stage uses its own)
MAIN_METRIC = {
    "identify": "noise_auroc", "inversion": "inversion_epoch_mean",
    "imbalance": "acc_hard_mean", "dynamics": "train_accuracy_last_epoch",
    "crossval": "heldout_true_accuracy", "confident_learning": "oof_true_accuracy",
    "data_params": "test_accuracy", "retrain": "test_accuracy", "vog": "test_accuracy",
    "vog_toy": "spearman", "train_classifier": "noise_auroc",
    "gasten_classifier": "test_accuracy", "gasten_featnet": "test_accuracy",
    "gasten_ambiguity": "selected_acd", "gasten_step2": "acd",
}

MAX_VALUE_CHARS = 16


def varied_keys(params, own=()):
    """The keys whose value differs between the ``params`` (one flat dict per trial spec
    of a stage, :class:`raydiff.tune.spec.TrialSpec`), in reading order: keys inherited from an
    earlier stage first, then the stage's own, ``seed`` last.

    A key inherited through ``after:`` (``noise_ratio`` taken from the identify trial,
    ``identify.strategy``) varies when the matched upstream trials differ in it, so an
    after-stage names its runs by the upstream axes too. ``own``: the keys the stage's
    sweep entry sets (``stage.config``).
    """
    if len(params) < 2:
        return []
    keys = list(dict.fromkeys(k for p in params for k in p))
    varied = [k for k in keys if len({canonical(p.get(k)) for p in params}) > 1]
    if "hardness" in varied:        # noise_kind is hardness's old name: the same axis
        varied = [k for k in varied if k != "noise_kind"]
    own = set(own)
    # an earlier stage's own axes (dotted) read first, then the data keys it passed on
    order = ([k for k in varied if "." in k]
             + [k for k in varied if k not in own and "." not in k and k != "seed"]
             + [k for k in varied if k in own and k != "seed"]
             + [k for k in varied if k == "seed"])
    return order


def short_names(keys):
    """{key: short label}: ``identify.strategy`` -> ``strategy``, ``noise_ratio`` ->
    ``noise``; a short label two keys would share keeps the longer form."""
    short = {k: SHORT.get(k.rsplit(".", 1)[-1], k.rsplit(".", 1)[-1]) for k in keys}
    counts = {}
    for label in short.values():
        counts[label] = counts.get(label, 0) + 1
    return {k: (label if counts[label] == 1 else k) for k, label in short.items()}


def format_value(value):
    """A value as it reads in a run name: 0.2, 1e-05, stragglers, [20,20]."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.4g}" if math.isfinite(value) else str(value)
    elif isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, separators=(",", ":"), default=str)
    else:
        text = str(value)
    text = text.replace(" ", "")
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 1] + "~"


def label(stage, params, keys, short=None):
    """``stage key=value ...`` for the varied ``keys`` of one trial's ``params``."""
    short = short or short_names(keys)
    parts = [f"{short[k]}={format_value(params.get(k))}" for k in keys]
    return " ".join([stage, *parts])


def name_specs(stage, specs, own=()):
    """Give every trial spec of ``stage`` its run name (``spec.name``), unique within
    the stage; returns the varied keys. Two specs that would read the same (they differ
    only in a key that is not shown, e.g. a long value cut short) get ``#2``, ``#3``."""
    keys = varied_keys([spec.params for spec in specs], own)
    short = short_names(keys)
    seen = {}
    for spec in specs:
        name = label(stage, spec.params, keys, short)
        seen[name] = seen.get(name, 0) + 1
        spec.name = name if seen[name] == 1 else f"{name} #{seen[name]}"
    return keys


def trial_name(config, trial_id):
    """Tune's trial name (progress table, dashboard) and the MLflow run name of one trial:
    the spec's name, plus the values a search algorithm drew and the trial's number (a
    search draws values, so two samples could read alike)."""
    trial = config["trial"]          # raydiff.tune.spec.tune_value
    name = trial["name"] or f"{trial['stage']}-{trial_id}"
    drawn = {k: v for k, v in config.items() if k != "trial"}
    if not drawn:
        return name
    parts = [f"{SHORT.get(k, k)}={format_value(v)}" for k, v in drawn.items()]
    return " ".join([name, *parts, f"#{str(trial_id).rsplit('_', 1)[-1]}"])


def dirname(name, trial_id):
    """A file-system-safe trial folder name: the trial id, then the readable name."""
    safe = "".join(c if c.isalnum() or c in "=.-" else "_" for c in name)
    return f"{trial_id}_{safe}"[:120]


def stage_label(stage):
    """How runs of ``stage`` are named: its name, or its experiment's for the one stage of a
    single-stage sweep (internally called ``main``)."""
    return stage.experiment if stage.name == "main" else stage.name


def main_metric(stage):
    """The metric column of ``stage``'s progress table (None: show none)."""
    if stage.search:
        return stage.search["metric"]
    return MAIN_METRIC.get(stage.experiment)


def canonical(value):
    """A value as stable text, to compare values of any type (lists, dicts, None)."""
    return json.dumps(value, sort_keys=True, default=str)


def data_digest(sample_id, observed_label):
    """A 16-hex digest of a training set: which samples (``sample_id``, (N,) ints, in any
    order) with which observed labels ((N,) ints). Equal digests mean the same samples
    with the same (possibly noisy) labels."""
    sample_id = np.asarray(sample_id, dtype=np.int64)
    observed_label = np.asarray(observed_label, dtype=np.int64)
    if sample_id.shape != observed_label.shape:
        raise ValueError(f"sample_id {sample_id.shape} and observed_label "
                         f"{observed_label.shape} differ in shape")
    order = np.argsort(sample_id, kind="stable")
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(sample_id[order]).tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(observed_label[order]).tobytes())
    return h.hexdigest()[:16]


def training_data(table, config):
    """What a trial trained on, from its ``per_sample.parquet`` table and config:
    ``{name, digest, num_rows, properties}`` for an MLflow dataset input, or None when the
    table lacks the columns. The training rows are ``split == "train"`` (all rows when the
    table has no train rows)."""
    if not {"sample_id", "observed_label"} <= set(table.columns):
        return None
    rows = table
    if "split" in table.columns and (table["split"] == "train").any():
        rows = table[table["split"] == "train"]
    properties = {"rows": int(len(rows))}
    for key in ("noise_ratio", "noise_kind", "hardness", "subset_size", "subset_seed", "seed"):
        if config.get(key) is not None:
            properties[key] = config[key]
    if "is_noisy" in rows.columns:
        properties["noisy_labels"] = int(rows["is_noisy"].sum())
    if "is_hard" in rows.columns:
        properties["hard_samples"] = int(rows["is_hard"].sum())
    name = str(config.get("dataset") or "data")
    return {"name": name, "digest": data_digest(rows["sample_id"], rows["observed_label"]),
            "num_rows": int(len(rows)), "properties": properties}


# the metrics a stage's first view shows beside its swept keys (else its MAIN_METRIC)
VIEW_METRICS = {
    "identify": ["noise_auroc", "n_hard"],
    "imbalance": ["acc_full_mean", "acc_hard_mean", "acc_easy_mean"],
    "inversion": ["inversion_epoch_mean", "noise_auroc"],
    "crossval": ["heldout_true_accuracy", "oof_epoch"],
    "gasten_step2": ["acd", "fid_smallcnn"],
}


def first_view(table):
    """What a researcher should see first of one session's trial runs: per stage, the
    keys the stage swept and its main metrics, and a chart of the main metric over the
    swept axis where one fits.

    ``table``: the session's trial runs as :func:`raydiff.tracking.runs_table` gives them
    (one row per run: ``stage``, ``experiment``, ``start_time``, the params, metrics as
    ``m.<key>``). Returns ``{"stages", "params", "main_metrics", "metrics", "charts"}``:
    the stages in the order they started, the swept
    keys (stages in the order they started, a stage's keys in its Config's field order,
    each key once), each stage's main metric, its other first-view metrics (metrics no
    run logged left out), and per stage with a numeric swept key one scatter
    ``{"stage", "x", "y"}`` of its main metric over the last such key, the axis its grid
    is read by.
    """
    view = {"stages": [], "params": [], "main_metrics": [], "metrics": [], "charts": []}
    if table is None or not len(table) or "stage" not in table.columns:
        return view
    if "start_time" in table.columns:
        table = table.sort_values("start_time", kind="stable")
    for stage, rows in table.groupby("stage", sort=False):
        experiment = rows["experiment"].iloc[0]
        view["stages"].append(stage)
        params = _params(rows, _field_order(experiment))
        keys = varied_keys(params)
        wanted = VIEW_METRICS.get(experiment) or [MAIN_METRIC.get(experiment)]
        found = [m for m in wanted if m and f"m.{m}" in rows and rows[f"m.{m}"].notna().any()]
        main = MAIN_METRIC.get(experiment)
        main = main if main in found else (found[0] if found else None)
        view["params"] += [k for k in keys if k not in view["params"]]
        if main and main not in view["main_metrics"]:
            view["main_metrics"].append(main)
        view["metrics"] += [m for m in found if m != main and m not in view["metrics"]]
        numeric = [k for k in keys if k != "seed" and all(
            isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool)
            for p in params)]
        if numeric and main:
            view["charts"].append({"stage": stage, "x": numeric[-1], "y": main})
    view["metrics"] = [m for m in view["metrics"] if m not in view["main_metrics"]]
    return view


_NOT_PARAMS = {"run_id", "status", "stage", "experiment", "session", "trial_seconds",
               "start_time"}


def _params(rows, order):
    """The params of each run of ``rows``, keys in ``order`` ({key: rank}); a key a run
    lacks (NaN in the table) left out."""
    def present(value):
        return not (isinstance(value, float) and math.isnan(value))

    return [dict(sorted(
        ((k, v) for k, v in row.items()
         if k not in _NOT_PARAMS and not k.startswith("m.") and present(v)),
        key=lambda kv: order.get(kv[0], len(order))))
        for row in rows.to_dict("records")]


def _field_order(experiment):
    """{key: position} of the experiment's Config fields (the order its sweep keys read
    in), or {} for an experiment this installation does not know."""
    import dataclasses

    from raydiff.experiments import get_experiment
    try:
        fields = dataclasses.fields(get_experiment(experiment).Config)
    except (KeyError, ValueError, TypeError):
        return {}
    return {f.name: i for i, f in enumerate(fields)}

