"""Resumable task execution on Dask: tasks, the run manifest, clusters, progress and reports."""

from cim.runner.cluster import dask_client
from cim.runner.manifest import Manifest, file_fingerprint, fingerprint
from cim.runner.tasks import Dep, RunReport, Task, TaskOutcome, run_tasks

__all__ = [
    "Dep",
    "Manifest",
    "RunReport",
    "Task",
    "TaskOutcome",
    "dask_client",
    "file_fingerprint",
    "fingerprint",
    "run_tasks",
]
