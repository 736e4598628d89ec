"""Report context over MLflow: artifacts downloaded on demand, output logged as a run."""

from raydiff import tracking
from raydiff.report.base import ReportContext


class MlflowContext(ReportContext):
    def __init__(self, runs, out, tracker, **options):
        super().__init__(runs, out, **options)
        self.tracker = tracker
        self._cache = self.out / ".artifacts"

    def artifact(self, run_id, name):
        local = self._cache / run_id / name
        if not local.exists():
            self.tracker.download(run_id, self._cache / run_id, name)
        return local

    def has_artifact(self, run_id, name):
        if (self._cache / run_id / name).exists():
            return True
        listed = tracking.retrying(self.tracker.client.list_artifacts, run_id)
        return name in {item.path for item in listed}

    def history(self, run_id, key):
        return self.tracker.history(run_id, key)

    def log_report_run(self, sweep, *, session):
        """Log every written file to a new FINISHED run tagged as this sweep's report."""
        tracker = self.tracker
        experiment_id = tracker.experiment_id(sweep)
        run = tracking.retrying(tracker.client.create_run, experiment_id,
                                run_name=f"report-{session}",
                                tags={tracking.TAG_KIND: "report", tracking.TAG_SWEEP: sweep,
                                      tracking.TAG_SESSION: session,
                                      # folded under the session's run in the UI
                                      tracking.TAG_PARENT: tracker.session_run(
                                          experiment_id, sweep, session, reopen=False)})
        try:
            for path in self.written:
                tracker.log_artifact(run.info.run_id, path)
            tracker.end(run.info.run_id, "FINISHED")
        except BaseException:
            tracker.end(run.info.run_id, "FAILED")
            raise
        return run.info.run_id
