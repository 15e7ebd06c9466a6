"""The runner's statements for any database, built once (see ``pgfast`` for PostgreSQL's fused ones)."""

from __future__ import annotations

import sqlalchemy as sa

from app.models import Dataset, DatasetState, Job, JobInput, JobOutput, JobState

_job, _dataset, _input, _output = Job.__table__, Dataset.__table__, JobInput.__table__, JobOutput.__table__
_bp = sa.bindparam

CLAIM = (
    sa.update(_job)
    .where(_job.c.id == _bp("job_id"), _job.c.state.in_([JobState.QUEUED, JobState.NEW]))
    .values(state=JobState.RUNNING, worker_id=_bp("worker"), attempts=_job.c.attempts + 1,
            start_time=_bp("now"), update_time=_bp("now"), pid=None)
    .returning(_job.c.tool_id, _job.c.params, _job.c.invocation_id)
)
TAKE_OVER = (
    sa.update(_job)
    .where(_job.c.id == _bp("job_id"), _job.c.state == JobState.RUNNING, _job.c.attempts == _bp("seen_attempts"))
    .values(state=JobState.RUNNING, worker_id=_bp("worker"), attempts=_job.c.attempts + 1,
            start_time=_bp("now"), update_time=_bp("now"), pid=None)
    .returning(_job.c.tool_id, _job.c.params, _job.c.invocation_id)
)
_DATASET_COLUMNS = (_dataset.c.id, _dataset.c.state, _dataset.c.object_key, _dataset.c.extension,
                    _dataset.c.name.label("dataset_name"), _dataset.c.hid, _dataset.c.metadata, _dataset.c.purged)
DATASETS = sa.union_all(
    sa.select(sa.literal(0).label("is_output"), _input.c.name.label("param"), *_DATASET_COLUMNS,
              _input.c.id.label("position"))
    .join(_dataset, _dataset.c.id == _input.c.dataset_id).where(_input.c.job_id == _bp("job_id")),
    sa.select(sa.literal(1).label("is_output"), _output.c.name.label("param"), *_DATASET_COLUMNS,
              _output.c.id.label("position"))
    .join(_dataset, _dataset.c.id == _output.c.dataset_id).where(_output.c.job_id == _bp("job_id")),
).order_by("is_output", "position")
FINISH = (
    sa.update(_job)
    .where(_job.c.id == _bp("job_id"), _job.c.state == JobState.RUNNING, _job.c.worker_id == _bp("worker"))
    .values(state=_bp("new_state"), exit_code=_bp("code"), command_line=_bp("script"), stdout=_bp("out"),
            stderr=_bp("err"), info=_bp("why"), end_time=_bp("now"), update_time=_bp("now"), pid=None)
)
OUTPUT_OK = (
    sa.update(_dataset)
    .where(_dataset.c.id == _bp("dataset_id"))
    .values(state=DatasetState.OK, object_key=_bp("key"), extension=_bp("ext"), file_size=_bp("size"),
            line_count=_bp("lines"), peek=_bp("text_peek"), blurb=_bp("text_blurb"), metadata=_bp("meta"),
            info=None, update_time=_bp("now"))
)
WAITING = (
    sa.select(_input.c.job_id).distinct()
    .join(_job, _job.c.id == _input.c.job_id)
    .where(_input.c.dataset_id.in_(_bp("outputs", expanding=True)), _job.c.state == JobState.NEW)
)
