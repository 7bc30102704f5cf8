"""Resumable task execution on Dask: tasks, the run manifest, clusters, progress and reports."""

from cim.runner.cluster import check_shared_storage, dask_client, is_remote
from cim.runner.manifest import Manifest, fingerprint
from cim.runner.tasks import Dep, RunReport, Task, TaskOutcome, run_tasks

__all__ = [
    "Dep",
    "Manifest",
    "RunReport",
    "Task",
    "TaskOutcome",
    "check_shared_storage",
    "dask_client",
    "fingerprint",
    "is_remote",
    "run_tasks",
]
