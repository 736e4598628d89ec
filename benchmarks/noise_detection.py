"""Run a benchmark sweep file in one plain Python process (no Ray, no MLflow), then its report.

Every trial the sweep plans runs in turn, stage after stage, each in ``OUT/<stage>-<i>/``
(artifacts and history.csv); a stage ``after:`` another gets the folders of the trials the
sweep's join pairs it with (all the folds, for confident learning). The report builders
then write into ``OUT/report`` and the Markdown results table is printed. For a machine
where Ray is not wanted (a lone GPU box) or a quick look at a smaller grid:

    python benchmarks/noise_detection.py sweeps/benchmark_demo.yaml OUT \\
        [--smoke] [--set seed=0] [--set noise_ratio=0.4]
"""

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from raydiff.data import load_dataset
from raydiff.experiments.base import Report, Upstream
from raydiff.experiments.config import build_config
from raydiff.report import FolderContext, build_report
from raydiff.tune import sweep as sweeps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("out")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    sweep = sweeps.load(args.sweep, overrides=args.overrides, smoke=args.smoke)
    out = Path(args.out)
    datasets, rows, folders = {}, [], {}
    for stage, specs in zip(sweep.stages, sweeps.plan(sweep).values()):
        for i, spec in enumerate(specs):
            module = stage.module
            config = build_config(module.Config, spec["config"], f"stages.{stage.name}")
            upstream = {}
            for experiment, planned in spec["upstream"].items():
                source = next(s for s in stage.after if sweep.stage(s).experiment == experiment)
                found = [Upstream(folders[(source, p)]) for p in
                         (planned if isinstance(planned, list) else [planned])]
                upstream[experiment] = found if isinstance(planned, list) else found[0]
            data = None
            if getattr(module, "NEEDS_DATA", True):
                key = (config.dataset, config.image_size)
                if key not in datasets:
                    datasets[key] = load_dataset(config.dataset, image_size=config.image_size)
                data = datasets[key]
            run_id = f"{stage.name}-{i}"
            folders[(stage.name, f"planned-{i}")] = out / run_id
            report = Report(out / run_id, upstream=upstream, device=args.device)
            start = time.perf_counter()
            metrics = module.run(config, report, data) or {}
            seconds = time.perf_counter() - start
            pd.DataFrame([(s, k, v) for s, m in report.history if s is not None
                          for k, v in m.items()], columns=["step", "key", "value"]
                         ).to_csv(out / run_id / "history.csv", index=False)
            rows.append({"run_id": run_id, "stage": stage.name, "experiment": module.NAME,
                         "trial_seconds": seconds, **spec["params"],
                         **{k: v for k, v in vars(config).items()},
                         **{f"m.{k}": v for k, v in metrics.items()}})
            print(f"{run_id}: {seconds:.1f} s", flush=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.csv", index=False)
    build_report(FolderContext(runs, out / "report", out))
    results = out / "report" / "benchmark_results.md"
    if results.exists():
        print("\n" + results.read_text())


if __name__ == "__main__":
    main()
