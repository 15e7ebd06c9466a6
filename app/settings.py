"""Nebula's settings: one pydantic-settings model read from a YAML file and the environment.

The settings file is YAML with two sections, as Gravity's is: ``nebula:`` holds these
settings, ``processes:`` holds the process layout that ``manage`` reads. Environment
variables named ``NEBULA_<FIELD>`` win over the file.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

CONFIG_ENV = "NEBULA_CONFIG"
EMBEDDED_BROKER = "sql"


class SettingsFileError(ValueError):
    """The settings file cannot be read or has the wrong shape."""


def read_settings_file(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Return the whole YAML document of a settings file (empty when there is none)."""
    if not path:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SettingsFileError(f"{path}: cannot read settings file: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SettingsFileError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsFileError(f"{path}: the top level must be a mapping")
    return data


class _YamlSection(PydanticBaseSettingsSource):
    """A settings source reading the ``nebula:`` section of the settings file."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]):
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field, field_name):  # pragma: no cover - required by the ABC
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


# Settings holding paths: relative ones in a settings file are relative to that file, so
# they mean the same whatever directory a process starts in.
PATH_FIELDS = ("data_dir", "tool_dirs")


def _resolve_paths(section: dict[str, Any], base: Path) -> dict[str, Any]:
    resolved = dict(section)
    for key in PATH_FIELDS:
        value = resolved.get(key)
        if isinstance(value, str):
            resolved[key] = str(base / Path(value).expanduser())
        elif isinstance(value, list):
            resolved[key] = [str(base / Path(v).expanduser()) if isinstance(v, str) else v for v in value]
    return resolved


class Settings(BaseSettings):
    """Everything a Nebula process needs to know; every field documents itself."""

    model_config = SettingsConfigDict(env_prefix="NEBULA_", extra="forbid", frozen=True)

    data_dir: Path = Field(
        Path("./database"),
        description="Directory for everything Nebula writes: the SQLite database, datasets, "
        "job working directories, short-term storage, logs and the generated process configs.",
    )
    bind: str = Field(
        "127.0.0.1:8080", description="host:port the web server listens on."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database, e.g. "
        "postgresql+psycopg://nebula@127.0.0.1/nebula. Default: SQLite in the data dir.",
    )
    broker_url: str = Field(
        EMBEDDED_BROKER,
        description="'sql' for the embedded broker on the database, or an amqp:// URL for "
        "RabbitMQ, e.g. amqp://guest:guest@127.0.0.1:5672/%2F.",
    )
    queue_prefix: str = Field(
        "",
        description="Prefix put before every queue name, so several Nebulas (or test runs) "
        "can share one RabbitMQ vhost.",
    )
    bootstrap_api_key: str | None = Field(
        None,
        description="An API key accepted as an admin's, like Galaxy's bootstrap_admin_api_key. "
        "Use it to create the first users.",
    )
    id_secret: str = Field(
        "nebula-change-this-secret",
        description="Secret used to encode database ids into the opaque ids the API shows.",
    )
    admin_users: list[str] = Field(
        default_factory=list, description="E-mail addresses of users who are admins."
    )
    allow_user_creation: bool = Field(
        False, description="Let anonymous clients register users (admins always can)."
    )
    max_request_size: int = Field(
        256 * 1024 * 1024,
        description="Largest request body accepted, in bytes (uploads included).",
        gt=0,
    )
    max_json_size: int = Field(
        16 * 1024 * 1024, description="Largest JSON request body accepted, in bytes.", gt=0
    )
    tool_dirs: list[Path] = Field(
        default_factory=list,
        description="Extra directories of tool definition files, loaded after the built-in ones.",
    )
    job_wall_time: int = Field(
        3600, description="Wall-time limit of one job, in seconds.", gt=0
    )
    upload_stall_timeout: int = Field(
        1800, description="An upload whose job has not changed for this many seconds gets its "
        "pipeline sent again (each step is idempotent).", gt=0
    )
    job_output_cap: int = Field(
        64 * 1024, description="Bytes of a job's stdout and stderr kept in the database.", gt=0
    )
    job_wakeup_window: float = Field(
        0.025, description="A workflow job's end wakes its invocation at once, and further ends in "
        "the same worker process within this many seconds are gathered into one wake-up (0: one "
        "per job).", ge=0
    )
    maximum_workflow_jobs_per_scheduling_iteration: int = Field(
        1000, description="At most this many jobs are created per scheduling iteration.", gt=0
    )
    maximum_workflow_invocation_duration: int = Field(
        31 * 24 * 3600,
        description="An invocation still active after this many seconds is failed.",
        gt=0,
    )
    fair_share_max_active_jobs: int = Field(
        100, description="The fair_share scheduler creates jobs for a user only while that user has "
        "fewer than this many jobs new, queued or running.", gt=0
    )
    default_scheduler: str = Field(
        "core", description="Scheduler plugin used when an invocation names none."
    )
    short_term_storage_default_duration: int = Field(
        86400, description="Seconds a prepared download stays available by default.", gt=0
    )
    short_term_storage_maximum_duration: int = Field(
        7 * 86400, description="Longest time a prepared download may be kept, in seconds.", gt=0
    )
    export_time_limit: int = Field(
        25 * 60,
        description="Time limit of one export task in seconds; keep it below RabbitMQ's "
        "consumer_timeout for the exports queues (see deploy/rabbitmq).",
        gt=0,
    )
    import_max_bytes: int = Field(
        64 << 30, description="Most bytes an imported history archive may unpack to (a zip bomb "
        "is refused past this, or past 200 times the archive's size when that is smaller).", gt=0
    )
    import_max_members: int = Field(
        200_000, description="Most files an imported history archive may hold.", gt=0
    )
    log_format: Literal["json", "console"] = Field(
        "json", description="Structured logs as JSON lines, or a console rendering."
    )
    log_level: str = Field("INFO", description="Logging level of every Nebula process.")

    @field_validator("bind")
    @classmethod
    def _check_bind(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:8080")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        if value != EMBEDDED_BROKER and not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must be 'sql' (the embedded broker) or an amqp:// URL")
        return value

    @model_validator(mode="after")
    def _check_durations(self) -> "Settings":
        if self.short_term_storage_default_duration > self.short_term_storage_maximum_duration:
            raise ValueError(
                "short_term_storage_default_duration exceeds short_term_storage_maximum_duration"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls,
        init_settings,
        env_settings,
        dotenv_settings,
        file_secret_settings,
    ):
        """Init arguments win, then the environment, then the ``nebula:`` file section."""
        path = os.environ.get(CONFIG_ENV)
        section = read_settings_file(path).get("nebula") or {}
        if not isinstance(section, dict):
            raise SettingsFileError(f"{path}: 'nebula' must be a mapping")
        if path:
            section = _resolve_paths(section, Path(path).expanduser().resolve().parent)
        return (init_settings, env_settings, _YamlSection(settings_cls, section))

    @cached_property
    def resolved_data_dir(self) -> Path:
        """The data dir as an absolute path."""
        return self.data_dir.expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'nebula.sqlite'}"

    @property
    def uses_embedded_broker(self) -> bool:
        """True when messages travel through the database instead of RabbitMQ."""
        return self.broker_url == EMBEDDED_BROKER

    def queue_name(self, name: str) -> str:
        """The broker queue name for one of Nebula's logical queues."""
        return f"{self.queue_prefix}{name}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the file named by NEBULA_CONFIG, the environment and overrides."""
    return Settings(**overrides)
