"""Stage-by-stage vs graph scheduling at cluster scale, simulated from trial durations.

Replays the trials of a finished session (their durations, end - start of each FINISHED
trial run in MLflow, per stage) on N slots, one trial per slot, greedily (a free slot
takes the next ready trial, in stage order), under two rules:

  series  a stage's trials are released once the previous stage (file order) has ended,
          the way raydiff ran sweeps before stages became a graph;
  graph   a stage's trials are released once every stage it reads (`after:`) has ended.

It prints, per N, each rule's makespan and utilisation (busy slot-seconds / (N x
makespan)) and the makespan ratio series / graph. With no session it replays a synthetic
one shaped like sweeps/benchmark_demo.yaml (its trial counts, durations drawn around the
README's trial seconds), so it runs anywhere.

    python benchmarks/stage_schedule_sim.py [--smoke] [--slots 2 8 64 512]
        [--sweep-file sweeps/benchmark_demo.yaml]
        [--mlflow NAME --tracking-uri URI --session latest|ID]
"""

import heapq
import sys

import _common

# README "trial s" of benchmark_demo (seconds per trial on a loaded 2-core VM); crossval
# is confident learning's 83.9 s less its own share, over 4 folds
SYNTHETIC_SECONDS = {"dynamics": 38.8, "identify": 358.4, "inversion": 143.0,
                     "data_params": 50.8, "small_loss": 15.6, "crossval": 19.0,
                     "confident_learning": 8.0, "vog": 25.5}


def simulate(after, durations, slots, *, series):
    """Makespan and busy slot-seconds of ``durations`` ({stage: [seconds, ...]}, stages in
    file order) on ``slots`` slots; ``after`` {stage: [stages it reads]}."""
    names = list(durations)
    ended, released, left = {}, set(), {n: len(durations[n]) for n in names}
    queue, running, free, now = [], [], slots, 0.0
    while len(ended) < len(names):
        for i, name in enumerate(names):
            if name in released:
                continue
            ups = names[:i] if series else after.get(name, [])
            if all(u in ended for u in ups):
                released.add(name)
                if not durations[name]:
                    ended[name] = now
                queue.extend((name, d) for d in durations[name])
        while free and queue:
            name, d = queue.pop(0)
            heapq.heappush(running, (now + d, name))
            free -= 1
        if not running:
            continue
        now, name = heapq.heappop(running)
        free += 1
        left[name] -= 1
        if left[name] == 0:
            ended[name] = now
    busy = sum(sum(d) for d in durations.values())
    return now, busy


def synthetic(sweep_file, seed=0):
    """Trial durations shaped like ``sweep_file``: its planned trial counts, each trial's
    seconds drawn log-normally (sigma 0.3) around SYNTHETIC_SECONDS (30 s when unknown)."""
    import numpy as np

    from raydiff.tune import sweep as sweeps

    sweep = sweeps.load(sweep_file)
    rng = np.random.default_rng(seed)
    counts = sweeps.planned_counts(sweep)
    return sweep.after, {name: list(SYNTHETIC_SECONDS.get(name, 30.0)
                                    * rng.lognormal(0.0, 0.3, size=n))
                         for name, n in counts.items()}


def session_durations(name, tracking_uri, session, stages):
    """{stage: [seconds of each trial, by start time]} of one session's FINISHED runs. The
    configs of a pack (tag ``raydiff.pack``) ran as one trial: their runs count once, from
    the first start to the last end."""
    from raydiff import tracking

    runs = tracking.Tracker(tracking_uri).runs(name, session=session)
    trials = {}
    for run in runs:
        stage = run.data.tags.get(tracking.TAG_STAGE)
        if run.info.status == "FINISHED" and stage in stages:
            key = (stage, run.data.tags.get("raydiff.pack") or run.info.run_id)
            start, end = trials.get(key, (run.info.start_time, run.info.end_time))
            trials[key] = (min(start, run.info.start_time), max(end, run.info.end_time))
    durations = {stage: [] for stage in stages}
    for (stage, _), (start, end) in sorted(trials.items(), key=lambda kv: kv[1][0]):
        durations[stage].append((end - start) / 1000)
    return durations


def trial_phase(name, tracking_uri=None, session="latest"):
    """Seconds from the first trial run's start to the last one's end in a session (the
    trial phase: Ray start, data loading and reports left out), and the number of runs."""
    from raydiff import tracking

    runs = [r for r in tracking.Tracker(tracking_uri).runs(name, session=session)
            if r.info.end_time]
    if not runs:
        return float("nan"), 0
    return (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000, len(runs)


def from_mlflow(name, tracking_uri, session, sweep_file):
    """The sweep's graph and the durations of a session's finished trials, per stage."""
    from raydiff.tune import sweep as sweeps

    after = sweeps.load(sweep_file).after
    durations = session_durations(name, tracking_uri, session, list(after))
    if not any(durations.values()):
        raise SystemExit(f"no finished trial runs of {name!r} (session {session}) in "
                         f"{tracking_uri or 'the default store'}")
    return after, durations


def report(after, durations, slots):
    """Print the table; returns {N: makespan ratio series / graph}."""
    total = sum(len(d) for d in durations.values())
    print(f"   {total} trials, {sum(sum(d) for d in durations.values()):.0f} trial-seconds, "
          f"stages: " + ", ".join(f"{n} {len(d)}" for n, d in durations.items()))
    print(f"   {'N':>5} {'series s':>10} {'util':>6} {'graph s':>10} {'util':>6} {'ratio':>6}")
    ratios = {}
    for n in slots:
        s_span, busy = simulate(after, durations, n, series=True)
        g_span, _ = simulate(after, durations, n, series=False)
        ratios[n] = s_span / g_span
        print(f"   {n:>5} {s_span:>10.1f} {busy / (n * s_span):>6.1%} {g_span:>10.1f} "
              f"{busy / (n * g_span):>6.1%} {ratios[n]:>5.2f}x")
    return ratios


def main():
    p = _common.parser(__doc__)
    p.add_argument("--slots", type=int, nargs="+", default=[2, 8, 64, 512])
    p.add_argument("--sweep-file", default=str(_common.REPO / "sweeps" / "benchmark_demo.yaml"),
                   help="the sweep whose `after:` graph (and, synthetic, trial counts) to use")
    p.add_argument("--mlflow", metavar="NAME", help="replay this sweep's session from MLflow")
    p.add_argument("--tracking-uri")
    p.add_argument("--session", default="latest")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic durations")
    args = p.parse_args()
    _common.header("stage scheduling simulated: series vs graph", args)
    if args.mlflow:
        after, durations = from_mlflow(args.mlflow, args.tracking_uri, args.session,
                                       args.sweep_file)
        print(f"   session {args.session} of {args.mlflow} from MLflow")
        phase, n_runs = trial_phase(args.mlflow, args.tracking_uri, args.session)
        print(f"   measured trial phase (first run start to last run end): {phase:.0f} s, "
              f"{n_runs} runs")
    else:
        after, durations = synthetic(args.sweep_file, args.seed)
        print(f"   synthetic session shaped like {args.sweep_file} (seed {args.seed})")
    ratios = report(after, durations, args.slots)
    print("summary: graph over series makespan: "
          + ", ".join(f"N={n} {r:.2f}x" for n, r in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
