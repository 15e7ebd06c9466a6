"""Task payloads: the typed commands that travel from the app to the workers.

Each names its actor and logical queue; ``workers`` implements them with ``@task`` and a
test checks that every one here has an actor.
"""

from __future__ import annotations

from typing import ClassVar

from app.messaging import TaskRequest, TaskRoute


class JobRequest(TaskRequest):
    """A request about one job."""

    job_id: int


class SetupFetchData(JobRequest):
    """Upload step 1: mark the upload job running."""

    route: ClassVar[TaskRoute] = TaskRoute("setup_fetch_data", "default")


class FetchData(JobRequest):
    """Upload step 2: bring each target's bytes into the object store."""

    route: ClassVar[TaskRoute] = TaskRoute("fetch_data", "default")


class SetJobMetadata(JobRequest):
    """Upload step 3: sniff, count, peek; datasets and job become ok."""

    route: ClassVar[TaskRoute] = TaskRoute("set_job_metadata", "default")


class FinishJob(JobRequest):
    """Error callback of a job pipeline: the job and its outputs become error."""

    route: ClassVar[TaskRoute] = TaskRoute("finish_job", "default")


class PurgeDatasets(TaskRequest):
    """Remove the files of purged datasets."""

    route: ClassVar[TaskRoute] = TaskRoute("purge_datasets", "default")
    dataset_ids: list[int]


class Noop(TaskRequest):
    """A task doing nothing; for health checks and benchmarks."""

    route: ClassVar[TaskRoute] = TaskRoute("noop", "default")
    value: int = 0


class PrepareHistoryArchive(TaskRequest):
    """Export: write a history archive into a short-term storage request."""

    route: ClassVar[TaskRoute] = TaskRoute("prepare_history_archive", "exports")
    storage_request_id: str
    history_id: int
    model_store_format: str = "tar.gz"
    include_files: bool = True
    include_hidden: bool = False
    include_deleted: bool = False


class ImportHistoryArchive(TaskRequest):
    """Import: make a new history from an uploaded archive (in ``staging_dir``) or a URL."""

    route: ClassVar[TaskRoute] = TaskRoute("import_history_archive", "exports")
    user_id: int
    staging_dir: str
    archive_url: str | None = None
    name: str | None = None


class BulkHistoryOperation(TaskRequest):
    """A bulk operation over many items of one history (items as [content type, id] pairs)."""

    route: ClassVar[TaskRoute] = TaskRoute("bulk_history_operation", "default")
    user_id: int
    history_id: int
    operation: str
    params: dict = {}
    items: list[tuple[str, int]] = []


class AdvanceInvocation(TaskRequest):
    """Run one scheduling iteration of a workflow invocation (sent on invoke, job end, step action, cancel)."""

    route: ClassVar[TaskRoute] = TaskRoute("advance_invocation", "scheduling")
    invocation_id: int
    # Set on the scheduler's own delayed wake-up, which always runs its pass.
    deferred: bool = False
    # Set on the scheduler's request for the next iteration of a long map-over: it waits
    # for the current iteration's lease instead of leaving a wake-up.
    follow_on: bool = False


class RunJob(JobRequest):
    """Run one tool job in a worker (a finished job is never run again); ``waits`` counts input waits."""

    route: ClassVar[TaskRoute] = TaskRoute("run_job", "jobs")
    waits: int = 0


class PrepareInvocationArchive(TaskRequest):
    """Export: write an invocation archive (zip, tar.gz, tar or rocrate.zip) into short-term storage."""

    route: ClassVar[TaskRoute] = TaskRoute("prepare_invocation_archive", "exports")
    storage_request_id: str
    invocation_id: int
    model_store_format: str = "zip"
    include_files: bool = True
    include_hidden: bool = False
    include_deleted: bool = False


class PrepareInvocationPdf(TaskRequest):
    """Export: render an invocation's report as a PDF into short-term storage."""

    route: ClassVar[TaskRoute] = TaskRoute("prepare_invocation_pdf", "exports")
    storage_request_id: str
    invocation_id: int
