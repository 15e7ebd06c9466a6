"""The commented sample settings file, generated from the settings' field descriptions.

``manage init`` writes it; deploy/nebula.yml.sample is the same text (a test keeps it so).
The ``nebula:`` section comes from the app's settings model, read in a subprocess through
pydantic's JSON schema so that manage never imports ``app``.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from nebula_manage.settings import ProcessSettings, ServiceSettings, WorkerPoolSettings

WIDTH = 92
APP_SCHEMA = (
    "import json, app.settings as s; print(json.dumps(s.Settings.model_json_schema()))"
)
# What manage itself knows of the nebula: section, used when the app cannot be asked.
FALLBACK_APP_FIELDS = {
    "data_dir": ("./database", "Directory for everything Nebula writes."),
    "bind": ("127.0.0.1:8080", "host:port the web server listens on."),
}
INTRO = """\
# Nebula settings. Two sections, as Gravity's: `nebula:` configures the application,
# `processes:` the services this host runs (read by `manage`). Every key is optional and the
# commented values are the defaults; environment variables NEBULA_<KEY> win over `nebula:`.
# Check a change with `manage update` (it refuses bad settings and changes nothing then).
#
# Written by `manage init` from the settings' field descriptions (deploy/nebula.yml.sample).
"""
EXPORTS_POOL_EXAMPLE = """\
  # A pool of its own for long exports, below RabbitMQ's consumer_timeout (deploy/rabbitmq):
  #  - name: exports
  #    queues: [exports]
  #    processes: 1
  #    time_limit: 1500
"""


def app_fields(python: str) -> tuple[dict[str, tuple[Any, str]], str | None]:
    """The app's settings as {name: (default, description)}, and a warning if unavailable."""
    try:
        done = subprocess.run(
            [python, "-P", "-c", APP_SCHEMA], capture_output=True, text=True, timeout=60
        )
        schema = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        schema = None
    if not schema:
        return FALLBACK_APP_FIELDS, "app.settings is not importable; the nebula: section lists only data_dir and bind"
    fields = {}
    for name, prop in schema.get("properties", {}).items():
        default = prop.get("default", {"array": [], "object": {}}.get(prop.get("type", ""), None))
        fields[name] = (default, prop.get("description", ""))
    return fields, None


BLANK = ""  # a blank line between described keys, never right under a section's name


def sample_settings(app: dict[str, tuple[Any, str]]) -> str:
    """The whole sample file for the given app fields."""
    lines = [INTRO.rstrip("\n"), BLANK, "nebula:"]
    for name, (default, description) in app.items():
        lines += _field(name, default, description, indent=2)
    lines += [BLANK, BLANK, "processes:"]
    lines += _model(ProcessSettings, indent=2, described=set())
    return _tidy(lines)


def _model(model: type[BaseModel], indent: int, described: set[tuple[str, str]]) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for name, info in _ordered_fields(model):
        nested = _nested_model(info)
        if name == "worker_pools":
            lines += _worker_pools(info, indent, described)
        elif nested is not None:
            lines += [BLANK, *_comment(info.description, pad), f"{pad}{name}:"]
            lines += _model(nested, indent + 2, described)
        else:
            # a description said once (enable, umask...) is not repeated for every service
            key = (name, info.description or "")
            text = "" if key in described else (info.description or "")
            described.add(key)
            lines += _field(name, info.get_default(call_default_factory=True), text, indent)
    return lines


def _worker_pools(info: FieldInfo, indent: int, described: set[tuple[str, str]]) -> list[str]:
    pad = " " * indent
    lines = [BLANK, *_comment(info.description, pad), f"{pad}# Each pool takes these keys:"]
    example = WorkerPoolSettings()
    body = []
    for name, field in _ordered_fields(WorkerPoolSettings):
        key = (name, field.description or "")
        if key not in described:
            lines += _comment(f"{name}: {field.description}", pad + "#   ", hanging=2)
            described.add(key)
        lead = "- " if not body else "  "
        body.append(f"{pad}#  {lead}{name}: {_yaml(getattr(example, name))}".rstrip())
    return lines + [f"{pad}#worker_pools:", *body, *EXPORTS_POOL_EXAMPLE.splitlines()]


def _ordered_fields(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    """enable first, then the service's own keys, then those every service has."""
    common = [name for name in ServiceSettings.model_fields if name != "enable"]
    fields = model.model_fields
    order = sorted(fields, key=lambda name: (name != "enable", name in common))
    return [(name, fields[name]) for name in order]


def _nested_model(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _field(name: str, default: Any, description: str, indent: int) -> list[str]:
    pad = " " * indent
    line = f"{pad}#{name}: {_yaml(default)}".rstrip()
    # a key whose description was given earlier sits with its neighbours
    return [BLANK, *_comment(description, pad), line] if description else [line]


def _comment(text: str | None, pad: str, hanging: int = 0) -> list[str]:
    prefix = pad if pad.rstrip().endswith("#") else pad + "# "
    lines = textwrap.wrap(text or "", WIDTH - len(prefix), subsequent_indent=" " * hanging)
    return [f"{prefix}{line}" for line in lines]


def _tidy(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        under_section_name = bool(out) and out[-1].endswith(":") and "#" not in out[-1]
        third_blank = out[-2:] == [BLANK, BLANK]
        if line == BLANK and (under_section_name or third_blank):
            continue
        out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


def _yaml(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if not isinstance(value, (str, int, float, bool, list, dict)):
        value = str(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()
