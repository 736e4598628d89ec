"""Display keys live under one ``figures:`` mapping: validated key by key, refused by name
when unknown or still written flat, merged (not replaced) by smoke runs, honoured by runs."""

import numpy as np
import pytest
import yaml

from raydiff.experiments import data_params, gasten_ambiguity, gasten_step2, vog
from raydiff.experiments.base import Report
from raydiff.experiments.config import ConfigError, build_config
from raydiff.tune import sweep as sweeps

DP_SWEEP = {
    "name": "dp",
    "config": {"dataset": "blobs", "noise_ratio": 0.2},
    "stages": {"dp": {"experiment": "data_params", "config": {"variant": "instance"}}},
}


def _sweep(**stage_config):
    raw = yaml.safe_load(yaml.safe_dump(DP_SWEEP))
    raw["stages"]["dp"]["config"].update(stage_config)
    return raw


def test_a_figures_mapping_sets_only_the_keys_it_names():
    config = build_config(data_params.Config, {"figures": {"strip_size": 5}})
    assert config.figures.strip_size == 5
    assert config.figures.tsne_thumbnails == 150 and config.figures.enabled   # defaults kept
    assert build_config(data_params.Config, {"figures": False}).figures.enabled is False
    assert build_config(data_params.Config, {"figures": {"enabled": False}}).figures.enabled is False


@pytest.mark.parametrize("module,values,words", [
    (data_params, {"figures": {"bogus": 1}},
     ["unknown key 'figures.bogus'", "strip_size", "tsne_thumbnails", "enrich_classes"]),
    (vog, {"figures": {"grid_every": 2}}, ["unknown key 'figures.grid_every'", "grid_classes"]),
    (data_params, {"figures": {"strip_size": 0}}, ["figures.strip_size=0 must be >= 1"]),
    (data_params, {"figures": {"tsne_thumbnails": "many"}}, ["figures.tsne_thumbnails must be int"]),
    (vog, {"figures": {"grid_stage": "never"}}, ["figures.grid_stage='never' is not allowed",
                                                 "late"]),
    (gasten_step2, {"figures": 3}, ["figures must be a mapping of", "grid_every"]),
])
def test_a_bad_figures_key_is_refused_by_its_dotted_name(module, values, words):
    with pytest.raises(ConfigError) as err:
        build_config(module.Config, values)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("module,key,value", [
    (data_params, "strip_size", 5), (data_params, "tsne_thumbnails", 40),
    (data_params, "enrich_classes", 0), (vog, "grid_classes", 0), (vog, "grid_stage", "early"),
    (gasten_step2, "grid_every", 5), (gasten_ambiguity, "embedding_test_size", 100)])
def test_a_flat_display_key_is_refused_with_where_it_moved(module, key, value):
    with pytest.raises(ConfigError, match=rf"'{key}' moved under 'figures:' "
                                          rf"\(figures: {{{key}: {value}}}\)"):
        build_config(module.Config, {key: value})


def test_a_sweep_with_a_flat_display_key_is_refused_with_the_hint():
    with pytest.raises(ConfigError, match=r"stages.dp.config: 'strip_size' moved under "
                                          r"'figures:' \(figures: {strip_size: 5}\)"):
        sweeps.validate(_sweep(strip_size=5))
    shared = _sweep()
    shared["config"]["tsne_thumbnails"] = 40      # in the shared config, no stage knows it
    with pytest.raises(ConfigError, match=r"'tsne_thumbnails' moved under 'figures:' "
                                          r"\(figures: {tsne_thumbnails: 40}\)"):
        sweeps.validate(shared)
    with pytest.raises(ConfigError, match=r"unknown key 'figures.strip'"):
        sweeps.validate(_sweep(figures={"strip": 5}))


def test_a_figures_axis_and_a_figures_mapping_validate_to_their_trial_counts():
    assert sweeps.planned_counts(sweeps.validate(_sweep(figures={"strip_size": 5}))) == {"dp": 1}
    axis = _sweep(figures={"grid": [{"strip_size": 3}, {"enabled": False}]})
    assert sweeps.planned_counts(sweeps.validate(axis)) == {"dp": 2}
    with pytest.raises(ConfigError, match="figures.strip_size=0 must be >= 1"):
        sweeps.validate(_sweep(figures={"grid": [{"strip_size": 0}]}))


def _smoke_figures(tmp_path, figures):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_sweep(figures=figures)))
    stage = sweeps.load(path, smoke=True).stages[0]
    return sweeps.resolved(stage, stage.config)["figures"]


def test_smoke_shrinks_display_keys_without_dropping_the_sweeps_own(tmp_path):
    smoke = data_params.Config.smoke_overrides()["figures"]
    assert smoke == {"enrich_classes": 2, "tsne_thumbnails": 20}
    got = _smoke_figures(tmp_path, {"strip_size": 3, "tsne_thumbnails": 90})
    assert got["strip_size"] == 3 and got["tsne_thumbnails"] == 20 and got["enrich_classes"] == 2
    assert _smoke_figures(tmp_path, False)["enabled"] is False      # off stays off


def test_figures_off_draws_nothing_and_changes_no_number(tmp_path):
    """The same trial with and without figures: the same per-sample table and metrics,
    PNGs only where figures are on."""
    from raydiff.data import make_blobs_dataset

    data = make_blobs_dataset(n_samples=200, cluster_std=2.0, seed=0)
    base = {"dataset": "blobs", "noise_ratio": 0.2, "model": "simple_nn", "hidden": [8],
            "epochs": 2, "batch_size": 50, "lr_milestones": [], "test_fraction": 0.2}
    out = {}
    for name, figures in (("on", {"enrich_classes": 1}), ("off", False)):
        folder = tmp_path / name
        metrics = data_params.run(build_config(data_params.Config, {**base, "figures": figures}),
                                  Report(folder), data)
        out[name] = (metrics, sorted(p.name for p in folder.glob("*.png")),
                     np.load(folder / "instance_sigma.npy"))
    # blobs are not images: no strip; the t-SNE and trajectories of class 0 only
    assert out["on"][1] == ["enrich_class000_trajectories.png", "enrich_class000_tsne.png",
                            "sigma_hist.png"]
    assert out["off"][1] == []
    assert out["on"][0] == out["off"][0]
    np.testing.assert_array_equal(out["on"][2], out["off"][2])
