"""Every model module, imported here so that Base.metadata knows all tables."""

from app.models.base import Base
from app.models.collections import DatasetCollection, DatasetCollectionElement, HistoryDatasetCollection, PopulatedState
from app.models.histories import Dataset, DatasetState, History
from app.models.jobs import Job, JobInput, JobOutput, JobState
from app.models.queue import OutboxMessage, QueueMessage
from app.models.tasks import Task, TaskState
from app.models.users import ApiKey, User
from app.models.workflows import (
    InvocationState, InvocationStepState, StepType, StoredWorkflow, Workflow, WorkflowInvocation,
    WorkflowInvocationMessage, WorkflowInvocationStep, WorkflowInvocationWakeup, WorkflowStep, WorkflowStepConnection,
)

__all__ = [
    "ApiKey",
    "Base",
    "Dataset",
    "DatasetState",
    "History",
    "Job",
    "JobInput",
    "JobOutput",
    "JobState",
    "OutboxMessage",
    "QueueMessage",
    "Task",
    "TaskState",
    "User",
    "DatasetCollection", "DatasetCollectionElement", "HistoryDatasetCollection", "PopulatedState",
    "InvocationState", "InvocationStepState", "StepType", "StoredWorkflow", "Workflow", "WorkflowInvocation",
    "WorkflowInvocationMessage", "WorkflowInvocationStep", "WorkflowInvocationWakeup", "WorkflowStep",
    "WorkflowStepConnection",
]
