"""A run whose outputs are in object storage, on a machine that keeps nothing.

Before the run opens its outputs: the lease is taken (a second runner exits here, having
touched nothing), the store's conditional writes are probed, and the state, dead letters
and metrics are downloaded into a private working directory (0700, removed at the end).
The run then works on a copy of the job whose outputs are those local files, so the rest
of the pipeline is unchanged; checkpoints upload them while it goes on, and `finish` once
more at its end, whatever its exit code.

The crash bound: a runner that vanishes loses at most what was settled since its last
upload, and the next run re-sends those rows (never loses them). A run never sends for
longer than `checkpoint.crash_window` without a saved copy of its state (it holds requests
while the store lags), so for events the next run counts as possibly duplicated what the
rate limit lets through in that window (`possibly_resent`), when the state it starts from
was uploaded by a run that did not finish. With `checkpoint_seconds` 0 the window is 0:
every request waits for a copy holding its in-flight marks, which the events ledger counts
one by one.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from importer.config import JobConfig, with_overrides
from importer.errors import EXIT_ABORTED, EXIT_DEAD_LETTERED, EXIT_OK
from importer.outputs.location import object_url
from importer.outputs.report import Report
from importer.quota.window import PACER_BURST_SHARE, PACER_HEADROOM
from importer.remote.checkpoint import (
    Checkpointer,
    Mirror,
    StateLost,
    StateMirror,
    Uploader,
    crash_window,
)
from importer.remote.lease import Lease, lease_seconds, renew_seconds
from importer.remote.store import (
    RemoteStore,
    StoreFault,
    StoreRefused,
    refuse_unguarded,
)
from importer.run.preflight import new_run_id

log = logging.getLogger("importer")

OUTPUTS = ("state", "dead_letter", "report", "metrics")
DOWNLOADED = ("state", "dead_letter", "metrics")  # the report is written anew
VERIFY_REPORT = "verify_report"  # verify --report s3://...: written here, uploaded after


def remote_urls(job: JobConfig, *extra: Path | None) -> dict[str, str]:
    urls = {name: object_url(getattr(job.output, name)) for name in OUTPUTS}
    urls.update({f"input{i}": object_url(path) for i, path in enumerate(extra)})
    return {name: url for name, url in urls.items() if url is not None}


def possibly_resent(job: JobConfig) -> int:
    """Events a vanished run may have sent after its last saved copy: what the limiter
    grants in `crash_window` seconds (its pacer's rate and burst, and never more than the
    window promise allows over as many periods)."""
    window = crash_window(job.output.checkpoint_seconds)
    if window <= 0:
        return 0
    updates, period = job.rate_limit.updates, job.rate_limit.period_seconds
    paced = updates * (PACER_HEADROOM * window / period + PACER_BURST_SHARE)
    return math.ceil(min(paced, updates * math.ceil(window / period)))


class RemoteOutputs:
    """The outputs of one command, downloaded before and uploaded after (a no-op when none
    is in object storage). `job` is the job to run: its outputs are local files."""

    def __init__(
        self,
        job: JobConfig,
        *,
        dry_run: bool,
        replay_from: Path | None = None,
        read_only: bool = False,
    ) -> None:
        self.read_only = read_only  # status: download, never upload
        self.remote_job = job
        self.job = job
        self.dry_run = dry_run
        self.replay_from = replay_from
        self.urls = remote_urls(job, replay_from)
        self.workdir: Path | None = None
        self.local: dict[str, Path] = {}  # output or input name -> its file in `workdir`
        self.resumed_unfinished = False
        self.run_id: str | None = None
        self._checkpoints: Checkpointer | None = None
        self._lease: Lease | None = None
        self._uploader: Uploader | None = None
        self._finished = False

    @property
    def active(self) -> bool:
        return bool(self.urls)

    def __enter__(self) -> RemoteOutputs:
        if not self.active:
            return self
        self.workdir = Path(tempfile.mkdtemp(prefix="moe-import-"))  # 0700
        try:
            self._open()
        except BaseException:
            self._cleanup()
            raise
        return self

    def _open(self) -> None:
        assert self.workdir is not None
        output = self.remote_job.output
        store = RemoteStore(output.storage)
        self.run_id = run_id = new_run_id()
        state_url = self.urls.get("state")
        if state_url is not None and not self.dry_run:
            if not output.storage.allow_unguarded and not store.honours_conditions(state_url):
                raise refuse_unguarded(state_url, output.storage)
            self._lease = Lease(store, state_url, run_id, lease_seconds(output.checkpoint_seconds))
            self._lease.acquire()
        self.local = local = {
            name: self.workdir / name / url.rpartition("/")[2] for name, url in self.urls.items()
        }
        etag = self._download(store, local)
        overrides = {name: str(path) for name, path in local.items() if name in OUTPUTS}
        self.job = with_overrides(
            self.remote_job, {"output": overrides}, need_credentials=not self.dry_run
        )
        if "input0" in local:
            self.replay_from = local["input0"]
        if self.dry_run:
            return
        state = StateMirror(state_url, local["state"], etag) if state_url else None
        files = [Mirror(self.urls[n], local[n]) for n in OUTPUTS[1:] if n in self.urls]
        self._uploader = Uploader(store, state, files, run_id, self.workdir)
        every = output.checkpoint_seconds
        self._checkpoints = Checkpointer(self._uploader, self._lease, every, renew_seconds(every))
        self._checkpoints.start()

    def _download(self, store: RemoteStore, local: dict[str, Path]) -> str | None:
        """Fetches what exists; the state's ETag (None: the first night)."""
        etag = None
        for name, path in local.items():
            path.parent.mkdir(mode=0o700)
            if name not in DOWNLOADED and not name.startswith("input"):
                continue
            fetched = store.get(self.urls[name])
            if fetched is None:
                if name.startswith("input"):
                    raise StoreRefused(f"{self.urls[name]}: no such object")
                continue
            path.write_bytes(fetched.body)
            path.chmod(0o600)
            if name == "state":
                etag = fetched.etag
                self.resumed_unfinished = fetched.metadata.get("final") == "0"
        return etag

    def attach(self, run: Any) -> None:
        """The run that a lost state or lease must stop (`Run.abort_from_thread`); it takes
        the run id the lease announced, so the lease, the state and the report agree."""
        if self.run_id is not None:
            run.run_id = run.report.run_id = self.run_id
        if self._checkpoints is not None:
            self._checkpoints.attach(run.abort_from_thread)
            run.before_send = self._checkpoints.before_send
            if run.ledger is not None:
                self._checkpoints.not_sent = run.ledger.not_sent

    def finish(self, report: Report) -> int:
        """Writes the report (its paths shown as URLs) and makes the last upload; the exit
        code it leaves: 3 when that upload finds the state lost or cannot be made."""
        if not self.active or self._finished:
            return report.exit_code
        self._finished = True
        self._count_resent(report)
        report.dead_letter = report.dead_letter and self.shown(report.dead_letter)
        report.state = report.state and self.shown(report.state)
        previous = report.dead_letter_previous
        report.dead_letter_previous = previous and self.shown(previous)
        self._write(report)
        lost = self._last_upload(report)
        if lost is not None:
            report.aborted = report.aborted or lost
            if report.exit_code in (EXIT_OK, EXIT_DEAD_LETTERED):
                report.exit_code = EXIT_ABORTED
            self._write(report)
            self._last_upload(report, with_state=False)
        return report.exit_code

    def _write(self, report: Report) -> None:
        try:
            report.write(self.job.output.report)
        except OSError as error:  # our own disk: the run is accounted for, the file not
            log.error("cannot write the report %s: %s", self.job.output.report, error.strerror)
            if report.exit_code in (EXIT_OK, EXIT_DEAD_LETTERED):
                report.exit_code = EXIT_ABORTED

    def local_of(self, path: Path | None) -> Path | None:
        """The file standing for `path` in the working directory when it names an object."""
        url = object_url(path)
        found = [self.local[n] for n, u in self.urls.items() if u == url and n in self.local]
        return found[0] if url is not None and found else path

    def shown(self, path: str | Path) -> str:
        """A path in the working directory as the object it stands for (its URL, or one
        beside it); any other path as it is."""
        path = Path(path)
        for name, local in self.local.items():
            if path == local:
                return self.urls[name]
            if path.parent == local.parent:
                return f"{self.urls[name].rpartition('/')[0]}/{path.name}"
        return str(path)

    def _count_resent(self, report: Report) -> None:
        if not (self.resumed_unfinished and self.job.import_ == "events" and not self.dry_run):
            return
        bound = report.events_possibly_duplicated + possibly_resent(self.job)
        counted = min(report.rows_accepted, bound)
        if counted > report.events_possibly_duplicated:
            report.events_possibly_duplicated = counted
            report.warn(
                f"the state was last saved by a run that did not finish: up to {counted:,}"
                " events sent now may have been sent by it (events_possibly_duplicated)"
            )

    def _last_upload(self, report: Report | None, *, with_state: bool = True) -> str | None:
        if self._checkpoints is not None:
            self._checkpoints.close()
        if self.dry_run or self._uploader is None:
            self.upload_files()
            return None
        try:
            self._uploader.upload(final=True, with_state=with_state)
        except StateLost as lost:
            return f"{lost}; this run's rows stay pending for the run that holds it"
        except (StoreFault, StoreRefused) as error:
            log.error("cannot upload the outputs: %s", error)
            return f"cannot upload the outputs: {error}"
        stopped = self._checkpoints.stopped if self._checkpoints else None
        return stopped

    def upload_files(self) -> None:
        """A dry run (or verify) leaves its own report and dead letters, never the state."""
        if self.read_only or self.workdir is None:
            return
        store = RemoteStore(self.remote_job.output.storage)
        names = ("dead_letter", "report", VERIFY_REPORT)
        files = [Mirror(self.urls[n], self.local[n]) for n in names if n in self.urls]
        Uploader(store, None, files, "", self.workdir).upload(final=True)

    def __exit__(self, *exc: object) -> None:
        try:
            if self.active and self.dry_run and exc[0] is None:
                self.upload_files()  # validate's own files, verify's report
            elif self.active and not self._finished and exc[0] is not None:
                self._finished = True
                with_state = not isinstance(exc[1], StoreRefused)
                self._last_upload(None, with_state=with_state)  # a crash of ours: what we have
        finally:
            if self._lease is not None:
                self._lease.release()
            self._cleanup()

    def _cleanup(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def remote_outputs(
    job: JobConfig, *, dry_run: bool, replay_from: Path | None = None
) -> RemoteOutputs:
    return RemoteOutputs(job, dry_run=dry_run, replay_from=replay_from)


def remote_view(
    job: JobConfig, *, upload: bool = False, report: Path | None = None
) -> RemoteOutputs:
    """The job's outputs downloaded for reading (`status`, `verify`): no lease, never the
    state uploaded; with `upload` the files written beside them are (verify's report), and
    `report` where it is an s3:// URL (`local_of` gives the file to write it to)."""
    view = RemoteOutputs(job, dry_run=True, read_only=not upload)
    url = object_url(report)
    if url is not None:
        view.urls[VERIFY_REPORT] = url
    return view
