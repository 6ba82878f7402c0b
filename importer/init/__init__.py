"""`moe-import init`: a job skeleton from an input."""
