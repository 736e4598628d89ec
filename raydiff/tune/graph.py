"""The stages of a sweep as a graph: which stage reads which, and running them in order.

A stage starts as soon as every stage it reads (``after:``) has finished, so stages that
read nothing from each other run side by side; Ray schedules their trials by resources
across all of them. A stage that fails (a trial failed, or the stage itself raised) stops
only the stages that read it, directly or further down. No Ray, no MLflow here: the
runner hands :func:`run_graph` a function that runs one stage.
"""

import concurrent.futures as cf
import threading
import traceback
import time

from raydiff.experiments.config import ConfigError

WAITING, RUNNING, FINISHED, FAILED, SKIPPED = "waiting", "running", "finished", "failed", "skipped"


def order(after, source="sweep"):
    """Stage names in dependency order (each after every stage it reads; otherwise in the
    order given). ``after`` maps a stage name to the names it reads; a missing stage or a
    cycle is refused with a ConfigError naming the stage."""
    out, done, visiting = [], set(), []

    def visit(name):
        if name in done:
            return
        if name in visiting:
            loop = visiting[visiting.index(name):] + [name]
            raise ConfigError(f"{source}: stages form a cycle through {name!r} "
                              f"({' -> '.join(loop)}); `after:` must not lead back to a stage")
        visiting.append(name)
        for up in after[name]:
            if up not in after:
                raise ConfigError(f"{source}: stages.{name}.after names a missing stage {up!r}; "
                                  f"stages: {sorted(after)}")
            visit(up)
        visiting.pop()
        done.add(name)
        out.append(name)

    for name in after:
        visit(name)
    return out


def levels(after):
    """Stages grouped by depth: level 0 reads nothing, level k reads some stage of level
    k - 1 and none deeper. Stages of one level never read each other."""
    depth = {}
    for name in order(after):
        depth[name] = 1 + max((depth[u] for u in after[name]), default=-1)
    return [sorted((n for n in depth if depth[n] == k), key=list(after).index)
            for k in range(max(depth.values(), default=-1) + 1)]


def dependants(after, name):
    """Every stage that reads ``name``, directly or through other stages."""
    out, todo = set(), [name]
    while todo:
        current = todo.pop()
        for stage, ups in after.items():
            if current in ups and stage not in out:
                out.add(stage)
                todo.append(stage)
    return out


def _progress_line(state, counts):
    parts = []
    for label in (RUNNING, WAITING, FINISHED, FAILED, SKIPPED):
        names = [n for n, s in state.items() if s == label]
        if names:
            parts.append(f"{label}: " + ", ".join(
                n + (f" ({counts[n]})" if counts.get(n) else "") for n in names))
    return "raydiff: stages " + " | ".join(parts)


def run_graph(after, run_stage, *, series=False, log=print, progress_every=60.0,
              counts=None):
    """Run every stage once all the stages it reads have finished.

    Parameters
    ----------
    after : dict
        stage name -> list of stage names it reads (the order of the keys is the order in
        the sweep file; ``series`` runs them in that order, one at a time).
    run_stage : callable
        ``run_stage(name) -> {"finished": n, "failed": m}``, called in a thread of its own.
        The stage failed when ``failed > 0`` or when it raised.
    series : bool
        one stage at a time, in dependency order (the baseline the graph is measured
        against); failures still skip only the dependants.
    log : callable
        receives one progress line per change of a stage's state, and every
        ``progress_every`` seconds while stages run.
    counts : callable, optional
        ``counts() -> {stage: "3/8 trials done"}`` to show beside running stages.

    Returns
    -------
    dict
        stage -> {"state": finished | failed | skipped, "reason": str, "finished": n,
        "failed": m, "seconds": wall seconds of the stage (0 when skipped)}.
    """
    names = order(after)
    state = {n: WAITING for n in names}
    out = {n: {"state": WAITING, "reason": "", "finished": 0, "failed": 0, "seconds": 0.0}
           for n in names}
    started = {}
    lock = threading.Lock()

    def show():
        log(_progress_line(state, counts() if counts else {}))

    with cf.ThreadPoolExecutor(max_workers=1 if series else max(1, len(names)),
                               thread_name_prefix="raydiff-stage") as pool:
        futures = {}
        while True:
            changed = False
            for name in names:
                if state[name] != WAITING:
                    continue
                blocked = [u for u in after[name] if state[u] in (FAILED, SKIPPED)]
                if blocked:
                    up = blocked[0]
                    state[name] = SKIPPED
                    out[name].update(state=SKIPPED, reason=(
                        f"upstream stage {up} failed" if state[up] == FAILED
                        else f"upstream stage {up} was skipped ({out[up]['reason']})"))
                    changed = True
                elif all(state[u] == FINISHED for u in after[name]) and (
                        not series or not futures):
                    state[name] = RUNNING
                    started[name] = time.monotonic()
                    futures[pool.submit(run_stage, name)] = name
                    changed = True
            if changed:
                with lock:
                    show()
                continue       # a skip may unblock (skip) more before we wait
            if not futures:
                break
            done, _ = cf.wait(futures, timeout=progress_every, return_when=cf.FIRST_COMPLETED)
            if not done:
                show()
            for future in done:
                name = futures.pop(future)
                out[name]["seconds"] = time.monotonic() - started[name]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - one stage's error stops only its dependants
                    log(f"raydiff: stage {name} raised:\n"
                        + "".join(traceback.format_exception(exc)).rstrip())
                    state[name] = FAILED
                    out[name].update(state=FAILED, reason=f"{type(exc).__name__}: {exc}"[:500])
                    continue
                out[name].update(finished=result["finished"], failed=result["failed"],
                                 retried=result.get("retried", ""))
                if result["failed"]:
                    state[name] = FAILED
                    out[name].update(state=FAILED,
                                     reason=f"{result['failed']} of "
                                            f"{result['failed'] + result['finished']} trials failed")
                else:
                    state[name] = FINISHED
                    out[name]["state"] = FINISHED
    return out


def summary_lines(result):
    """One line per stage for the end of a run: what ran, what was skipped and why."""
    lines = []
    for name, r in result.items():
        if r["state"] == SKIPPED:
            lines.append(f"  {name}: skipped, {r['reason']}")
        else:
            lines.append(f"  {name}: {r['state']}, {r['finished']} trials finished, "
                         f"{r['failed']} failed, {r['seconds']:.0f} s"
                         + (f"; {r['retried']}" if r.get("retried") else "")
                         + (f" ({r['reason']})" if r["state"] == FAILED and r["reason"] else ""))
    return lines
