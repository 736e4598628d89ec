"""The ``raydiff`` command: run sweeps, build reports, open the MLflow UI, serve tracking."""

import argparse
import os
import subprocess
import sys
from pathlib import Path


def _user_errors():
    """The errors the command reports as one line (exit 2) instead of a traceback; imported
    when one is raised, so `raydiff server` on a head starts without importing torch."""
    from raydiff.data import DatasetNotFound
    from raydiff.experiments.config import ConfigError
    from raydiff.tracking import TrackingError
    return ConfigError, DatasetNotFound, TrackingError


def _overrides(args):
    sets = list(args.set or [])
    if args.data_root:
        sets.append(f"data_root={Path(args.data_root).absolute()}")
    if args.download:
        sets.append("download=true")
    return sets


def _pack_arg(text):
    """``--pack N`` / ``--pack auto`` as run_sweep takes it (None: the sweep's own keys)."""
    if text is None:
        return None
    from raydiff.tune.packs import check_pack
    value = int(text) if text.strip().lstrip("-").isdigit() else text.strip()
    return check_pack(value, "--pack")


def cmd_run(args):
    from raydiff.tune import sweep as sweeps

    _pack_arg(args.pack)            # a bad --pack is refused before anything starts
    sweep = sweeps.load(args.sweep, overrides=_overrides(args), smoke=args.smoke)
    counts = sweeps.planned_counts(sweep)
    print(f"raydiff: sweep {sweep.name}: " + ", ".join(f"{k} {v} trials" for k, v in counts.items()))
    for line in sweeps.ignored_lines(sweep):
        print(line)
    if args.dry_run:
        return 0
    from raydiff import tracking

    tracking.Tracker(args.tracking_uri).check()     # an unreachable store stops us before Ray
    from raydiff.tune.runner import run_sweep

    result = run_sweep(sweep, address=args.address, tracking_uri=args.tracking_uri,
                       storage_path=args.storage_path, resume=args.resume,
                       num_cpus=args.num_cpus, dashboard=not args.no_dashboard,
                       dashboard_host=args.dashboard_host, series=args.series,
                       verbose=1 + (args.verbose or 0), pack=_pack_arg(args.pack))
    # a failed trial, a failed stage or a stage skipped because of one: not a clean run
    failed = sum(s["failed"] for s in result["stages"].values()) + sum(
        s["state"] != "finished" for s in result["stages"].values())
    print(f"raydiff: session {result['session']} done; runs are in MLflow experiment "
          f"{sweep.name!r} at {result['tracking_uri']}")
    print(f"raydiff: report with `raydiff report {sweep.name}`; browse with `raydiff ui`"
          + (f" (--tracking-uri {args.tracking_uri})" if args.tracking_uri else ""))
    if args.report:
        build(sweep.name, args.report, args.tracking_uri, "latest")
    return 1 if failed else 0


def build(name, out, tracking_uri, session, per_cell=False):
    from raydiff import tracking
    from raydiff.report import build_report
    from raydiff.report.mlflow_context import MlflowContext

    from raydiff.experiments.config import ConfigError

    tracker = tracking.Tracker(tracking_uri)
    tracker.check()
    runs = tracker.runs(name, session=session)
    if not runs:
        raise ConfigError(f"no trial runs of sweep {name!r} in {tracker.uri}; run "
                          f"`raydiff run SWEEP.yaml` first, or check --tracking-uri")
    table = tracking.runs_table(runs)
    finished = table[table["status"] == "FINISHED"].reset_index(drop=True)
    ctx = MlflowContext(finished, out, tracker, per_cell=per_cell)
    ctx.table("runs.csv", table.drop(columns=[c for c in table.columns if c.startswith("m.")]))
    written = build_report(ctx)
    report_run = ctx.log_report_run(name, session=table["session"].iloc[0])
    print(f"raydiff: report of {name} ({len(finished)} finished runs of {len(table)}) "
          f"in {Path(out).absolute()}: {len(written)} files")
    for path in written:
        print(f"  {path}")
    print(f"raydiff: also logged to MLflow run {report_run} in experiment {name!r}")
    return 0


def cmd_report(args):
    return build(args.name, args.out or os.path.join("reports", args.name),
                 args.tracking_uri, args.session, per_cell=args.per_cell)


def cmd_ui(args):
    from raydiff.tracking import Tracker

    tracker = Tracker(args.tracking_uri)
    tracker.check()            # creates a new store here, so the server's workers never race to
    uri = tracker.uri
    tracker.mark_all_training()     # experiments of an older raydiff open on the runs table too
    base = f"http://{args.host}:{args.port}"
    name = args.name or _latest_experiment(tracker)
    view = _first_view(tracker, name, base) if name else None
    if args.url:
        print(view or (tracker.runs_page(name, base) if name else base + "/"))
        return 0
    print(f"raydiff: MLflow UI for {uri} at {base} (Ctrl-C stops it)")
    if name:
        print(f"raydiff: all runs of {name}: {tracker.runs_page(name, base)}")
    if view:
        print(f"raydiff: charts of the latest session: {view.replace('?', '?compareRunsMode=CHART&', 1)}")
        print(f"raydiff: latest session of {name}, open this: {view}")
    sys.stdout.flush()
    return subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                            "--host", args.host, "--port", str(args.port)])


def _first_view(tracker, name, base):
    """URL of the first view of ``name``'s latest session (its trial runs grouped by
    stage, swept keys and main metrics as columns), stored as an MLflow shared view;
    None when the sweep has no trial runs."""
    from raydiff import tracking
    from raydiff.tune import describe

    runs = tracker.runs(name)
    if not runs:
        return None
    table = tracking.runs_table(runs)
    view = describe.first_view(table)
    return tracker.share_first_view(name, base, session=table["session"].iloc[0], **view)


def _latest_experiment(tracker):
    """The experiment a sweep wrote to last (None in an empty store)."""
    from raydiff.tracking import retrying
    exps = {e.experiment_id: e.name
            for e in retrying(tracker.client.search_experiments, max_results=50000)}
    runs = retrying(tracker.client.search_runs, list(exps), max_results=1,
                    order_by=["attributes.start_time DESC"]) if exps else []
    return exps[runs[0].info.experiment_id] if runs else None


def cmd_server(args):
    from raydiff import server

    try:
        return server.serve(host=args.host, port=args.port, folder=args.dir,
                            backend=args.backend, workers=args.workers,
                            artifacts_destination=args.artifacts_destination)
    except server.ServerError as exc:
        print(f"raydiff: error: {exc}", file=sys.stderr)
        return 2


def cmd_validate(args):
    from raydiff.tune import sweep as sweeps

    for path in args.sweeps:
        sweep = sweeps.load(path, overrides=args.set or [], smoke=args.smoke)
        print(f"{path}: ok, {sweeps.planned_counts(sweep)}")
        for line in sweeps.ignored_lines(sweep):
            print(line)
    return 0


def _add_run(sub):
    """The ``raydiff run`` command and its options."""
    run = sub.add_parser("run", help="run a sweep file on Ray Tune, tracked in MLflow")
    run.add_argument("sweep", help="sweep YAML file (see sweeps/)")
    run.add_argument("--smoke", action="store_true", help="tiny data, 1-2 epochs per trial")
    run.add_argument("--resume", action="store_true",
                     help="finish the latest session of this sweep: only unfinished trials run")
    run.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                     help="Ray cluster to join ('auto' for the local cluster); default: a local Ray")
    run.add_argument("--tracking-uri", help="MLflow URI (default sqlite:///mlflow.db here)")
    run.add_argument("--storage-path", default=os.environ.get("RAYDIFF_STORAGE", "ray_results"),
                     help="Tune results and checkpoints (shared storage on a cluster, e.g. s3://...)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config key wherever the sweep sets it (stage.key for one stage)")
    run.add_argument("--data-root", help="folder with datasets in torchvision's layout")
    run.add_argument("--download", action="store_true", help="download missing datasets")
    run.add_argument("--num-cpus", type=int, help="CPUs of a local Ray (default: all)")
    run.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    run.add_argument("--dashboard-host", default="127.0.0.1",
                     help="bind address of a local Ray's dashboard (default loopback only)")
    run.add_argument("--series", action="store_true",
                     help="run the stages one at a time in file order, not side by side "
                          "as their `after:` graph allows (the baseline of benchmarks/stage_graph.py)")
    run.add_argument("--pack", metavar="N|auto",
                     help="configs per trial for stages that pack (1 = one config per "
                          "trial; default: each stage's `pack` key, auto)")
    run.add_argument("--dry-run", action="store_true", help="validate and count trials only")
    run.add_argument("--report", metavar="DIR", help="write the report to DIR when done")
    run.add_argument("-v", "--verbose", action="count", default=0,
                     help="Tune's own verbose output: a config box per trial start, "
                          "every result (default: one progress table per stage)")
    run.set_defaults(func=cmd_run)


def parser():
    p = argparse.ArgumentParser(prog="raydiff", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    _add_run(sub)

    rep = sub.add_parser("report", help="tables and figures from a sweep's MLflow runs")
    rep.add_argument("name", help="sweep name (= MLflow experiment)")
    rep.add_argument("--out", help="output folder (default reports/NAME)")
    rep.add_argument("--tracking-uri")
    rep.add_argument("--session", default="latest", help="latest (default), all, or a session id")
    rep.add_argument("--per-cell", action="store_true",
                     help="also one figure per cell of a grid (default: one figure per question)")
    rep.set_defaults(func=cmd_report)

    ui = sub.add_parser("ui", help="open the MLflow UI on the project's store")
    ui.add_argument("name", nargs="?",
                    help="sweep whose runs page to print (default: the latest one)")
    ui.add_argument("--tracking-uri")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--url", action="store_true",
                    help="only store the first view and print its URL (no server)")
    ui.set_defaults(func=cmd_ui)

    srv = sub.add_parser("server", help="run the MLflow tracking server of a cluster "
                         "(foreground; prints its URI when ready; SIGTERM/Ctrl-C stops it)")
    srv.add_argument("--host", default="127.0.0.1",
                     help="bind address (default loopback only; 0.0.0.0 on a cluster head)")
    srv.add_argument("--port", type=int, default=5000)
    srv.add_argument("--dir", default="mlflow-server",
                     help="folder of the store, the artifacts and the log (default ./mlflow-server)")
    srv.add_argument("--backend", choices=["postgresql", "sqlite"],
                     help="postgresql: a private PostgreSQL cluster under --dir (the default "
                          "where its programs are installed; holds a cluster's load); "
                          "sqlite: a SQLite file in WAL mode")
    srv.add_argument("--workers", type=int, default=4, help="server worker processes (default 4)")
    srv.add_argument("--artifacts-destination", metavar="URI",
                     help="where proxied artifacts go (default DIR/artifacts; e.g. s3://BUCKET/...)")
    srv.set_defaults(func=cmd_server)

    val = sub.add_parser("validate", help="check sweep files without running them")
    val.add_argument("sweeps", nargs="+")
    val.add_argument("--set", action="append", metavar="KEY=VALUE")
    val.add_argument("--smoke", action="store_true")
    val.set_defaults(func=cmd_validate)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:
        if isinstance(exc, _user_errors()):
            print(f"raydiff: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
