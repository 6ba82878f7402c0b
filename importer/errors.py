"""The errors a run can end in: one tree, each class knowing the exit code it maps to.

    ImporterError (3)                 the base; `exit_code`, and `report` where one was made
    ├── UsageError (2)                refused before anything was sent: fix, then rerun
    │   ├── ConfigError               config.py: the job file (names the key path)
    │   ├── SourceError               sources: an input that cannot be read as data
    │   ├── StateError                state/database.py: a state file that is not one, a symlink
    │   ├── DeadLetterError           deadletter.py: a dead-letter file replay cannot read
    │   └── JobRefused                api.py: what the Python API raises for any of these
    ├── RowsDeadLettered (1)          api.py: the run finished, some rows dead-lettered
    ├── RunAborted (3)                stopped with rows pending; the same command resumes
    │   ├── ApiAbort                  run/answers.py, run/outages.py: credentials, redirect,
    │   │                             outage, 429s, refusals (out of a send: SendAborted)
    │   │   └── QuotaUnavailable      quota: the shared quota cannot be reached
    │   ├── StateFault                state/database.py: the state database failed mid-run
    │   └── DeadLetterFault           deadletter.py: writing the dead-letter file failed
    └── RunInterrupted (130)          api.py: Ctrl-C or SIGTERM

Row-level problems are not exceptions: a row's reason travels with it to the dead-letter
file. The few exceptions outside this tree (`transport.NoAnswer`, `outcome.SettleFault`,
`resources.OpenAborted`) never leave the module pair that raises and catches them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from importer.exitcodes import (
    EXIT_ABORTED as EXIT_ABORTED,
)
from importer.exitcodes import (
    EXIT_DEAD_LETTERED as EXIT_DEAD_LETTERED,
)
from importer.exitcodes import (
    EXIT_EMPTY as EXIT_EMPTY,
)
from importer.exitcodes import (
    EXIT_INTERRUPTED as EXIT_INTERRUPTED,
)
from importer.exitcodes import (
    EXIT_OK as EXIT_OK,
)
from importer.exitcodes import (
    EXIT_USAGE as EXIT_USAGE,
)

if TYPE_CHECKING:
    # A type only: the report does not import this module (its exit codes are exitcodes').
    from importer.outputs.report import Report


class ImporterError(Exception):
    """A run that did not do its work; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_ABORTED

    def __init__(self, message: str = "", report: Report | None = None) -> None:
        super().__init__(message)
        self.report = report


class UsageError(ImporterError):
    """The job file, its input or its output paths are wrong; nothing was sent."""

    exit_code = EXIT_USAGE


class RunAborted(ImporterError):
    """The run stopped with rows pending; the same command resumes once the cause is fixed."""

    exit_code = EXIT_ABORTED


class ApiAbort(RunAborted):
    """The run cannot go on (credentials, account, URL, redirect, outage, 429s, refusals).

    Out of a send it arrives as `importer.run.results.SendAborted`, which also carries
    what the send had settled.
    """

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RowsDeadLettered(ImporterError):
    """The run finished, but some rows are in the dead-letter file."""

    exit_code = EXIT_DEAD_LETTERED


class RunInterrupted(ImporterError):
    """A signal stopped the run; the same command resumes it."""

    exit_code = EXIT_INTERRUPTED


def describe_fault(error: BaseException) -> str:
    """A reader fault without its message: a parser's message can quote the input's text
    (personal data), which belongs in the dead-letter file only."""
    if isinstance(error, OSError):
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or type(error).__name__}{where}"
    return f"{type(error).__name__} (its message is not shown: it may quote the input)"
