"""The exit codes a run ends in, as docs/REFERENCE.md ("Exit codes") gives them.

Apart from `importer.errors` so the report (which computes its exit code) needs nothing
of the error tree, and the error tree can name the report without a cycle.
"""

EXIT_OK = 0
EXIT_DEAD_LETTERED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
EXIT_EMPTY = 4  # the input held no data rows (allowed with source.allow_empty: true)
EXIT_INTERRUPTED = 130
