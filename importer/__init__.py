"""moe-import: load user profiles from CSV and Parquet into MoEngage's Data API."""

__version__ = "0.1.0"
