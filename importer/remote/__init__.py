"""Outputs in object storage (s3://): the state, dead letters, report and metrics of a run
on a machine that keeps nothing.

store       one S3 endpoint: reads, plain and conditional writes, each bounded in time
lease       the object beside the state that keeps a second runner of the job from starting
checkpoint  uploads of the state (conditional on the version we wrote last) and the files
session     the run's private working directory: downloads, the local job, the last upload
"""

from __future__ import annotations

from importer.remote.session import RemoteOutputs, remote_outputs, remote_view

__all__ = ["RemoteOutputs", "remote_outputs", "remote_view"]
