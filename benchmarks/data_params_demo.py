"""Run a data-parameters sweep file in one plain Python process (no Ray, no MLflow).

The sweep is validated and planned as ``raydiff run`` would (``--seeds`` replaces its
seed axis); every trial runs through the benchmarks' one Ray-free runner
(:func:`_common.run_stages`) into ``OUT/<stage>-<i>/`` (artifacts and history.csv) and
the data_params report builder then writes its tables into ``OUT/report``.

    python benchmarks/data_params_demo.py sweeps/data_params_demo.yaml OUT [--seeds 0 1]
"""

import argparse
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

import _common
from raydiff.report import FolderContext, build_report
from raydiff.tune import sweep as sweeps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("out")
    parser.add_argument("--seeds", type=int, nargs="*")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    # a fixed thread count: OpenMP (t-SNE) and torch spin against each other on a busy CPU
    threadpool_limits(args.threads)
    overrides = [f"seed={{grid: {list(args.seeds)}}}"] if args.seeds else []
    sweep = sweeps.load(args.sweep, overrides=overrides)
    out, rows = Path(args.out), []
    _common.run_stages(sweep, out, threads=args.threads, rows=rows)
    for row in rows:
        print(f"{row['run_id']}: {row['trial_seconds']:.1f} s  " + "  ".join(
            f"{k[2:]}={v:.3f}" for k, v in row.items()
            if k.startswith("m.") and ("accuracy" in k or "detect" in k)), flush=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.csv", index=False)
    written = build_report(FolderContext(runs, out / "report", out))
    for path in written:
        if path.suffix == ".csv":
            print(f"\n{path.name}\n{pd.read_csv(path).round(3).to_string(index=False)}")


if __name__ == "__main__":
    main()
