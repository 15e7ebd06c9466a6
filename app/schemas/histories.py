"""Histories, their contents and datasets."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from app.schemas.common import Model, Query, Request


class HistoryCreate(Request):
    """POST /api/histories."""

    name: str = Field("Unnamed history", max_length=255)


class HistoryUpdate(Request):
    """PUT /api/histories/{id}: the fields given are changed."""

    name: str | None = Field(None, max_length=255)
    annotation: str | None = Field(None, max_length=65536)
    tags: list[str] | None = None
    published: bool | None = None
    deleted: bool | None = None


class HistoryDelete(Request):
    """DELETE /api/histories/{id} body."""

    purge: bool = False


class HistoryView(Model):
    """A history."""

    id: str
    name: str
    url: str
    contents_url: str
    state: str
    state_details: dict[str, int]
    state_ids: dict[str, list[str]]
    deleted: bool
    purged: bool
    published: bool
    annotation: str | None
    tags: list[str]
    count: int = Field(description="Datasets and collections ever added (Galaxy: hid_counter - 1).")
    size: int = Field(description="Bytes of the datasets not purged.")
    nice_size: str
    contents_active: dict[str, int] = Field(description="Contents active, deleted and hidden (these two overlap).")
    contents_states: dict[str, int] = Field(description="Visible, undeleted contents by state.")
    hid_counter: int
    user_id: str
    create_time: dt.datetime
    update_time: dt.datetime
    model_class: str = "History"


class HistoryListQuery(Query):
    """GET /api/histories."""

    deleted: bool = False
    limit: int | None = Field(None, ge=0)
    offset: int = Field(0, ge=0)
    name: str | None = None


class ContentsQuery(Query):
    """GET /api/histories/{id}/contents."""

    deleted: bool | None = None
    visible: bool | None = None
    details: str | None = None
    types: list[str] | None = None
    ids: list[str] | None = None
    limit: int | None = Field(None, ge=0)
    offset: int = Field(0, ge=0)
    v: str | None = None


class DatasetUpdate(Request):
    """PUT /api/histories/{h}/contents/{id} and PUT /api/datasets/{id}."""

    name: str | None = Field(None, max_length=255)
    visible: bool | None = None
    deleted: bool | None = None
    genome_build: str | None = Field(None, max_length=64)
    dbkey: str | None = Field(None, max_length=64)
    info: str | None = Field(None, max_length=65536)
    tags: list[str] | None = None


class DatasetView(Model):
    """A dataset in a history (Galaxy's HDA)."""

    id: str
    hid: int
    name: str
    history_id: str
    state: str
    extension: str
    file_ext: str
    genome_build: str
    misc_info: str | None
    misc_blurb: str | None
    peek: str | None
    file_size: int
    metadata_data_lines: int | None
    metadata_columns: int | None = None
    metadata_column_types: list[str] | None = None
    metadata_column_names: list[str] | None = None
    deleted: bool
    purged: bool
    visible: bool
    tags: list[str]
    creating_job: str | None
    download_url: str
    url: str
    type_id: str
    history_content_type: str = "dataset"
    type: str = "file"
    model_class: str = "HistoryDatasetAssociation"
    create_time: dt.datetime
    update_time: dt.datetime
