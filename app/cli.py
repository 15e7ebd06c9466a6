"""Administrative commands of the app (``python -m app.cli``); ``manage`` forwards to them.

Exit codes: 0 success, 1 the thing checked is down or failed, 2 bad usage or settings.
"""

from __future__ import annotations

import json
import os
import sys

import click
from pydantic import ValidationError

from app.settings import CONFIG_ENV, Settings, SettingsFileError, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except (ValidationError, SettingsFileError) as exc:
        raise click.ClickException(describe_settings_error(exc)) from exc


def describe_settings_error(exc: Exception) -> str:
    """'FILE: nebula.KEY: why' lines for a settings error."""
    source = os.environ.get(CONFIG_ENV) or "environment"
    if isinstance(exc, ValidationError):
        lines = []
        for err in exc.errors(include_url=False):
            key = ".".join(str(p) for p in err["loc"]) or "(settings)"
            lines.append(f"{source}: nebula.{key}: {err['msg']}")
        return "\n".join(lines)
    return str(exc)


@click.group()
def cli() -> None:
    """Nebula administration."""


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Create the database if needed and migrate it."""
    from app.migrate import upgrade

    reached = upgrade(_settings(), revision)
    click.echo(f"database at revision {reached}")


@db.command("current")
def db_current() -> None:
    """Print the database's revision and the newest one."""
    from app.migrate import current, head

    settings = _settings()
    rev, newest = current(settings), head()
    click.echo(f"current: {rev or '(not migrated)'}  head: {newest}")
    if rev != newest:
        sys.exit(1)


@cli.group()
def user() -> None:
    """Users and keys."""


@user.command("create")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option("--password")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
def user_create(username: str, email: str, password: str | None, admin: bool) -> None:
    """Create a user and print a new API key for it."""
    from app.db import make_engine, make_session_factory, session_scope
    from app.errors import NebulaError
    from app.schemas.users import UserCreate
    from app.services import users

    settings = _settings()
    try:
        body = UserCreate(username=username, email=email, password=password)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    with session_scope(make_session_factory(make_engine(settings))) as session:
        try:
            created = users.create_user(session, body, is_admin=admin)
        except NebulaError as exc:
            raise click.ClickException(exc.message) from exc
        key = users.new_api_key(session, created)
    click.echo(key)


@user.command("api-key")
@click.argument("name_or_email")
def user_api_key(name_or_email: str) -> None:
    """Print a new API key for a user (older keys stop working)."""
    from app.db import make_engine, make_session_factory, session_scope
    from app.errors import NebulaError
    from app.services import users

    with session_scope(make_session_factory(make_engine(_settings()))) as session:
        try:
            found = users.find_user(session, name_or_email)
        except NebulaError as exc:
            raise click.ClickException(exc.message) from exc
        click.echo(users.new_api_key(session, found))


@cli.group("settings")
def settings_group() -> None:
    """Settings."""


@settings_group.command("check")
def settings_check() -> None:
    """Validate the settings file and environment (exit 2 with file, key and why)."""
    try:
        load_settings()
    except (ValidationError, SettingsFileError) as exc:
        click.echo(describe_settings_error(exc), err=True)
        sys.exit(2)
    click.echo("settings ok")


@settings_group.command("show")
def settings_show() -> None:
    """Print the effective settings as JSON (the bootstrap key and secret masked)."""
    data = _settings().model_dump(mode="json")
    for secret in ("bootstrap_api_key", "id_secret"):
        if data.get(secret):
            data[secret] = "********"
    click.echo(json.dumps(data, indent=2))


@settings_group.command("sample")
def settings_sample() -> None:
    """Print the commented ``nebula:`` section of a settings file, from the field descriptions."""
    click.echo(sample_section(), nl=False)


def sample_section() -> str:
    """The ``nebula:`` YAML section with every setting commented out at its default."""
    import textwrap

    import yaml

    lines = ["nebula:"]
    for name, field in Settings.model_fields.items():
        for line in textwrap.wrap(field.description or "", 86):
            lines.append(f"  # {line}")
        default = field.get_default(call_default_factory=True)
        default = str(default) if hasattr(default, "as_posix") else default
        rendered = yaml.safe_dump({name: default}, default_flow_style=True, width=1000).strip()
        rendered = rendered[1:-1] if rendered.startswith("{") else rendered
        lines.append(f"  #{rendered}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def health(as_json: bool) -> None:
    """Check the database and the broker; exit 1 when one is down."""
    from app.health import check_broker, check_database

    settings = _settings()
    report = {"database": check_database(settings), "broker": check_broker(settings)}
    if as_json:
        click.echo(json.dumps(report))
    else:
        for name, item in report.items():
            click.echo(f"{name:9} {'ok' if item['ok'] else 'DOWN'}  {item['detail']}")
    sys.exit(0 if all(item["ok"] for item in report.values()) else 1)


def main() -> None:
    """Entry point."""
    cli(prog_name="python -m app.cli")


if __name__ == "__main__":
    main()
