"""Read the settings file and the environment into a `Deployment`, or refuse with reasons.

manage reads the ``processes:`` section and, of the ``nebula:`` section, only ``data_dir``
and ``bind``; ``NEBULA_DATA_DIR`` and ``NEBULA_BIND`` win over the file. The rest of
``nebula:`` is the app's: ``app.cli settings check`` validates it (see ``appcli.py``).
"""

from __future__ import annotations

import difflib
import socket
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nebula_manage.errors import SettingsRefused
from nebula_manage.settings import ProcessSettings, check_bind

CONFIG_ENV = "NEBULA_CONFIG"
SECTIONS = ("nebula", "processes")
DEFAULT_DATA_DIR = "./database"
DEFAULT_BIND = "127.0.0.1:8080"
UNIX_SOCKET_MAX = 107  # sun_path holds 108 bytes, one of them the terminating NUL


@dataclass(frozen=True)
class Deployment:
    """Everything rendering needs, already resolved: no file or environment lookups left."""

    processes: ProcessSettings
    data_dir: Path
    bind: str
    python: str
    config_path: Path | None = None
    environment: dict[str, str] = field(default_factory=dict)
    state_root: Path | None = None  # processes.state_dir resolved; None: the data dir
    hostname: str = ""

    @property
    def state_dir(self) -> Path:
        """Where the supervisord configuration, socket, pid and log live."""
        return (self.state_root or self.data_dir) / "supervisor"

    @property
    def log_dir(self) -> Path:
        """Where every program's log lives."""
        return (self.state_root or self.data_dir) / "logs"

    @property
    def socket_path(self) -> Path:
        """supervisord's unix socket."""
        return self.state_dir / "supervisord.sock"

    @property
    def web_binds(self) -> list[str]:
        """The bind of each web instance (nebula.bind when none are listed)."""
        return list(self.processes.web.binds) or [self.bind]


def config_path_from(option: str | None, environ: Mapping[str, str]) -> Path | None:
    """The settings file named by ``-c`` or ``NEBULA_CONFIG``, as an absolute path."""
    raw = option or environ.get(CONFIG_ENV)
    return Path(raw).expanduser().absolute() if raw else None


def load_deployment(
    config_path: Path | None, environ: Mapping[str, str], python: str, cwd: Path
) -> Deployment:
    """Validate the settings file and the environment into a Deployment, or refuse."""
    document, text = _read(config_path)
    source = str(config_path) if config_path else None
    locate = _Locator(text, source)
    problems = [
        locate.problem((key,), "unknown section; the file has two: nebula and processes")
        for key in document
        if key not in SECTIONS
    ]
    nebula = document.get("nebula") or {}
    if not isinstance(nebula, dict):
        problems.append(locate.problem(("nebula",), "must be a mapping of settings"))
        nebula = {}
    data_dir, bind = _data_dir_and_bind(nebula, environ, cwd, locate, problems)
    try:
        processes = ProcessSettings.model_validate(document.get("processes"))
    except ValidationError as exc:
        problems += [locate.pydantic_problem(error) for error in exc.errors()]
        processes = None
    state_root = None
    if processes is not None and processes.state_dir is not None:
        state_root = (cwd / processes.state_dir.expanduser()).resolve()
    if processes is not None and processes.process_manager == "supervisor":
        problems += _check_socket(state_root or data_dir)
    if problems or processes is None:
        raise SettingsRefused(problems, source)
    return Deployment(
        processes=processes,
        data_dir=data_dir,
        bind=bind,
        python=python,
        config_path=config_path,
        environment=program_environment(environ, config_path, data_dir),
        state_root=state_root,
        hostname=socket.gethostname(),
    )


def load_for_control(
    config_path: Path | None, environ: Mapping[str, str], python: str, cwd: Path
) -> tuple[Deployment, list[str]]:
    """Like `load_deployment`, but bad settings fall back to defaults, and their problems
    are returned: stopping or inspecting what runs must work while the file is being fixed."""
    try:
        return load_deployment(config_path, environ, python, cwd), []
    except SettingsRefused as refused:
        problems = refused.problems
    try:
        document, _ = _read(config_path)
    except SettingsRefused:
        document = {}
    nebula = document.get("nebula") if isinstance(document.get("nebula"), dict) else {}
    raw = document.get("processes") if isinstance(document.get("processes"), dict) else {}
    try:
        processes = ProcessSettings.model_validate(
            {key: raw[key] for key in ("process_manager", "systemd", "state_dir") if key in raw}
        )
    except ValidationError:
        processes = ProcessSettings()
    data_dir, bind = _data_dir_and_bind(nebula, environ, cwd, _Locator("", None), [])
    deployment = Deployment(
        processes=processes,
        data_dir=data_dir,
        bind=bind if _valid_bind(bind) else DEFAULT_BIND,
        python=python,
        config_path=config_path,
        environment=program_environment(environ, config_path, data_dir),
        state_root=(cwd / processes.state_dir).resolve() if processes.state_dir else None,
        hostname=socket.gethostname(),
    )
    return deployment, problems


def _valid_bind(bind: str) -> bool:
    try:
        check_bind(bind)
    except ValueError:
        return False
    return True


def program_environment(
    environ: Mapping[str, str], config_path: Path | None, data_dir: Path
) -> dict[str, str]:
    """Every NEBULA_* variable, with NEBULA_CONFIG and NEBULA_DATA_DIR made absolute."""
    env = {key: value for key, value in environ.items() if key.startswith("NEBULA_")}
    env.pop(CONFIG_ENV, None)
    if config_path is not None:
        env[CONFIG_ENV] = str(config_path)
    # Programs run in the data dir: a relative NEBULA_DATA_DIR would point elsewhere there.
    env["NEBULA_DATA_DIR"] = str(data_dir)
    return dict(sorted(env.items()))


def _read(config_path: Path | None) -> tuple[dict[str, Any], str]:
    if config_path is None:
        return {}, ""
    try:
        text = config_path.read_text()
    except OSError as exc:
        raise SettingsRefused([f"{config_path}: cannot read it: {exc.strerror}"]) from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        why = getattr(exc, "problem", None) or str(exc)
        raise SettingsRefused([f"{config_path}{line}: not valid YAML: {why}"]) from exc
    if document is None:
        return {}, text
    if not isinstance(document, dict):
        raise SettingsRefused([f"{config_path}: the top level must be a mapping of sections"])
    return document, text


def _data_dir_and_bind(
    nebula: dict[str, Any],
    environ: Mapping[str, str],
    cwd: Path,
    locate: "_Locator",
    problems: list[str],
) -> tuple[Path, str]:
    raw_dir = environ.get("NEBULA_DATA_DIR") or nebula.get("data_dir") or DEFAULT_DATA_DIR
    if not isinstance(raw_dir, str):
        problems.append(locate.problem(("nebula", "data_dir"), f"must be a path (got {raw_dir!r})"))
        raw_dir = DEFAULT_DATA_DIR
    data_dir = (cwd / Path(raw_dir).expanduser()).resolve()
    bind = environ.get("NEBULA_BIND") or nebula.get("bind") or DEFAULT_BIND
    try:
        check_bind(str(bind))
    except ValueError as exc:
        if environ.get("NEBULA_BIND"):
            problems.append(f"environment NEBULA_BIND: {exc}")
        else:
            problems.append(locate.problem(("nebula", "bind"), str(exc)))
    return data_dir, str(bind)


def _check_socket(state_root: Path) -> list[str]:
    path = state_root / "supervisor" / "supervisord.sock"
    if len(str(path).encode()) > UNIX_SOCKET_MAX:
        return [
            f"{state_root} is too long a path for supervisord's unix socket ({path} passes "
            f"{UNIX_SOCKET_MAX} bytes); choose a shorter data dir or processes.state_dir"
        ]
    return []


class _Locator:
    """Turns a key path into ``file:line: key: why`` using the YAML node positions."""

    def __init__(self, text: str, source: str | None):
        self.source = source or "settings"
        try:
            self.root = yaml.compose(text) if text else None
        except yaml.YAMLError:
            self.root = None

    def line(self, loc: tuple[Any, ...]) -> int | None:
        """The line of the deepest key of ``loc`` present in the file."""
        node, line = self.root, None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = [(k, v) for k, v in node.value if k.value == part]
                if not match:
                    break
                line, node = match[0][0].start_mark.line + 1, match[0][1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def problem(self, loc: tuple[Any, ...], why: str) -> str:
        """One refusal line."""
        line = self.line(loc)
        where = f"{self.source}:{line}" if line else self.source
        key = ".".join(str(part) for part in loc)
        return f"{where}: {key}: {why}"

    def pydantic_problem(self, error: Mapping[str, Any]) -> str:
        """One refusal line for one pydantic error under ``processes:``."""
        loc = ("processes", *error["loc"])
        why = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            why = "unknown key" + _suggest(error["loc"])
        elif error["type"] not in ("value_error", "missing"):
            why += f" (got {error['input']!r})"
        return self.problem(loc, why)


def _suggest(loc: tuple[Any, ...]) -> str:
    """', did you mean …?' for a misspelt key, else the list of known keys."""
    model: Any = ProcessSettings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        args = typing.get_args(annotation)
        model = args[0] if args else annotation
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"; did you mean {close[0]}?"
    return f"; known keys: {', '.join(known)}"
