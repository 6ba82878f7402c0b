"""`moe-import init`: a job skeleton from an input."""

from importer.init.model import ScaffoldError
from importer.init.scaffold import scaffold_job

__all__ = ["ScaffoldError", "scaffold_job"]
