"""`moe-import verify`: read back what MoEngage stored for a sample of a job's customers and
compare it with what the job's current input maps to."""

from importer.verify.check import VerifyOutcome, format_table, verify_job

__all__ = ["VerifyOutcome", "format_table", "verify_job"]
