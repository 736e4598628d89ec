"""Run a data-parameters sweep file in one plain Python process (no Ray, no MLflow).

Every stage's config is the sweep's shared config plus the stage's own; only ``seed`` may
be a ``{grid: [...]}`` axis. Each trial writes into ``OUT/<stage>-s<seed>/`` (artifacts and
history.csv) and the data_params report builder then writes its tables into ``OUT/report``.

    python benchmarks/data_params_demo.py sweeps/data_params_demo.yaml OUT [--seeds 0 1]
"""

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from threadpoolctl import threadpool_limits

from raydiff.data import load_dataset
from raydiff.experiments import get_experiment
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import build_config
from raydiff.report import FolderContext, build_report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("out")
    parser.add_argument("--seeds", type=int, nargs="*")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    # a fixed thread count: OpenMP (t-SNE) and torch spin against each other on a busy CPU
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    raw = yaml.safe_load(Path(args.sweep).read_text())
    shared = dict(raw.get("config") or {})
    seeds = args.seeds or shared.pop("seed", {"grid": [0]})["grid"]
    shared.pop("seed", None)
    out = Path(args.out)
    datasets, rows = {}, []
    for seed in seeds:
        for stage, spec in raw["stages"].items():
            module = get_experiment(spec["experiment"])
            names = {f.name for f in dataclasses.fields(module.Config)}
            values = {k: v for k, v in shared.items() if k in names}
            values.update(spec.get("config") or {}, seed=seed)
            config = build_config(module.Config, values, where=f"{stage} seed {seed}")
            key = (config.dataset, config.image_size)
            if key not in datasets:
                datasets[key] = load_dataset(config.dataset, image_size=config.image_size)
            after = spec.get("after")
            upstream = ({raw["stages"][after]["experiment"]: Upstream(out / f"{after}-s{seed}")}
                        if after else None)
            run_id = f"{stage}-s{seed}"
            report = Report(out / run_id, upstream=upstream)
            start = time.perf_counter()
            metrics = module.run(config, report, datasets[key])
            seconds = time.perf_counter() - start
            pd.DataFrame([(s, k, v) for s, m in report.history if s is not None
                          for k, v in m.items()], columns=["step", "key", "value"]
                         ).to_csv(out / run_id / "history.csv", index=False)
            rows.append({"run_id": run_id, "stage": stage, "experiment": module.NAME,
                         "trial_seconds": seconds, **dataclasses.asdict(config),
                         **{f"m.{k}": v for k, v in metrics.items()}})
            print(f"{run_id}: {seconds:.1f} s  " + "  ".join(
                f"{k}={v:.3f}" for k, v in metrics.items() if "accuracy" in k or "detect" in k),
                flush=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.csv", index=False)
    written = build_report(FolderContext(runs, out / "report", out))
    for path in written:
        if path.suffix == ".csv":
            print(f"\n{path.name}\n{pd.read_csv(path).round(3).to_string(index=False)}")


if __name__ == "__main__":
    main()
