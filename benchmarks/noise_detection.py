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
from pathlib import Path

import pandas as pd
import torch
from threadpoolctl import threadpool_limits

import _common
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
    threadpool_limits(args.threads)
    sweep = sweeps.load(args.sweep, overrides=args.overrides, smoke=args.smoke)
    out, rows = Path(args.out), []
    _common.run_stages(sweep, out, threads=args.threads, device=args.device, rows=rows,
                       verbose=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.csv", index=False)
    build_report(FolderContext(runs, out / "report", out))
    results = out / "report" / "benchmark_results.md"
    if results.exists():
        print("\n" + results.read_text())


if __name__ == "__main__":
    main()
