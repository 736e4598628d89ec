"""Tune's progress table for a stage: the varied keys as columns, the stage's main metric,
trials done out of the total and the time left; quiet unless something changed.

Tune 2.x prints through its "AIR" output engine by default, which ignores a
``progress_reporter`` and prints a config box per trial start (each key twice, nested
dicts cut off). The classic reporter is used unless ``raydiff run -v`` asks for Tune's own
verbose output; the choice is an environment variable read (more than once) while
``fit()`` runs, so :func:`choose_output` sets it once in the driver before any stage's
Tuner starts: stages run in threads side by side, and a variable flipped by one while
another's ``fit()`` runs sends that one down a half-old, half-new output path.
"""

import os
import time

from ray.tune import CLIReporter

from raydiff.tune import describe

# a status table at most this often while trials run (a table also comes at the end)
TABLE_EVERY_S = float(os.environ.get("RAYDIFF_PROGRESS_EVERY_S", "30"))
MAX_ROWS = 20


class StageReporter(CLIReporter):
    """Prints ``stage: 3/6 done, 2 running, ~1m40s left`` and a table of the trials
    (running ones first) when the trials' states changed, at most every ``every`` seconds,
    and once at the end."""

    def __init__(self, stage_name, *, total, parameter_columns, metric_columns,
                 every=TABLE_EVERY_S):
        super().__init__(parameter_columns=parameter_columns, metric_columns=metric_columns,
                         max_progress_rows=MAX_ROWS, max_error_rows=5, max_column_length=24,
                         max_report_frequency=every, print_intermediate_tables=True)
        self.stage_name, self.total, self.every = stage_name, total, every
        self._last_state, self._last_print = None, 0.0
        self._started, self._ended = {}, {}

    def _states(self, trials):
        now = time.monotonic()
        for t in trials:
            if t.status == "RUNNING":
                self._started.setdefault(t.trial_id, now)
            elif t.status in ("TERMINATED", "ERROR") and t.trial_id in self._started:
                self._ended.setdefault(t.trial_id, now)
        return tuple(sorted((t.trial_id, t.status) for t in trials))

    def should_report(self, trials, done=False):
        state = self._states(trials)
        if done:
            return True
        changed = state != self._last_state
        return changed and time.monotonic() - self._last_print >= self.every

    def summary(self, trials):
        """One line: done/total, running, errored, and the time left (after a trial ended)."""
        count = {s: sum(t.status == s for t in trials) for s in ("TERMINATED", "ERROR", "RUNNING")}
        finished = count["TERMINATED"] + count["ERROR"]
        total = max(self.total or 0, len(trials))
        line = f"raydiff: stage {self.stage_name}: {finished}/{total} trials done"
        if count["RUNNING"]:
            line += f", {count['RUNNING']} running"
        if count["ERROR"]:
            line += f", {count['ERROR']} errored"
        eta = estimate_left([self._ended[i] - self._started[i] for i in self._ended],
                            remaining=total - finished, running=count["RUNNING"])
        if eta is not None and finished < total:
            line += f", about {format_seconds(eta)} left"
        return line

    def report(self, trials, done, *sys_info):
        self._last_state, self._last_print = self._states(trials), time.monotonic()
        if not done and all(t.status == "PENDING" for t in trials):
            self._print(self.summary(trials))       # nothing to tabulate yet
            return
        # Tune's own status header (memory, resources, logdir) only at -v
        table = self._progress_str(trials, done, fmt="psql")
        keep = table.split("\n")
        start = next((i for i, line in enumerate(keep) if line.startswith("+")), len(keep))
        self._print("\n".join([self.summary(trials), *keep[start:]]).rstrip())


def estimate_left(durations, *, remaining, running):
    """Seconds until ``remaining`` trials finish, ``running`` at a time, from the
    ``durations`` of finished ones (None before any finished). Running trials are counted
    as half done."""
    if not durations or remaining <= 0:
        return None
    mean = sum(durations) / len(durations)
    slots = max(running, 1)
    return mean * max(remaining - 0.5 * running, 0) / slots


def format_seconds(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def choose_output(verbose=1):
    """Tune's classic output (our table) unless ``verbose`` >= 2 (``raydiff run -v``);
    call once, before any Tuner of the session is built or restored."""
    if verbose >= 2:
        os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
    else:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"


def tune_output(stage, specs, *, keys, verbose=1):
    """``RunConfig`` keyword arguments (``progress_reporter``, ``verbose``) and Tuner
    naming (``trial_name_creator``, ``trial_dirname_creator``) for one stage's Tuner.

    ``verbose`` 2 or more (``raydiff run -v``) keeps Tune's own output with a config box
    per trial; otherwise the :class:`StageReporter` table."""
    short = describe.short_names(keys)
    columns = {f"trial/params/{k}": short[k] for k in keys}
    if stage.search:
        columns.update({k: describe.SHORT.get(k, k) for k, v in stage.config.items()
                        if isinstance(v, dict) and next(iter(v)) in ("uniform", "loguniform",
                                                                     "randint")})
    metric = describe.main_metric(stage)
    total = len(specs) * (stage.search["num_samples"] if stage.search else 1)
    if verbose >= 2:
        run = {"verbose": verbose}
    else:
        run = {"verbose": 1, "progress_reporter": StageReporter(
            stage.name, total=total, parameter_columns=columns or {"trial/stage": "stage"},
            metric_columns={metric: metric} if metric else {"training_iteration": "iter"})}
    naming = {"trial_name_creator": _trial_name, "trial_dirname_creator": _trial_dirname}
    return run, naming


def _trial_name(trial):
    return describe.trial_name(trial.config, trial.trial_id)


def _trial_dirname(trial):
    return describe.dirname(_trial_name(trial), trial.trial_id)
