"""``python -m workers.cli``: inspect queues and handle dead letters (``manage`` forwards here).

Settings come from ``NEBULA_CONFIG`` and ``NEBULA_*`` as for every process. Queue
arguments are Nebula's logical names (``jobs``); the queue prefix is added for you.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import dramatiq
import pydantic

from app.settings import Settings, SettingsFileError, load_settings
from workers import broker as queues_api


def _settings() -> Settings:
    try:
        return load_settings()
    except (SettingsFileError, pydantic.ValidationError) as exc:
        raise click.ClickException(str(exc)) from exc


@contextmanager
def _broker(settings: Settings) -> Iterator[dramatiq.Broker]:
    """A broker without middleware (nothing is processed here), closed afterwards."""
    broker = queues_api.build_broker(settings, middleware=[])
    try:
        yield broker
    finally:
        broker.close()


def _queue(settings: Settings, name: str) -> str:
    """The broker name of a logical queue (a name already prefixed is kept)."""
    prefix = settings.queue_prefix
    return name if prefix and name.startswith(prefix) else settings.queue_name(name)


def _run(action: Callable[[], Any]) -> Any:
    """Run a broker action, turning an unreachable broker into a one-line error."""
    try:
        return action()
    except click.ClickException:
        raise
    except Exception as exc:  # noqa: BLE001 - top of a command: say what failed, no traceback
        detail = str(exc) or repr(exc)
        raise click.ClickException(f"broker unreachable or failing: {type(exc).__name__}: {detail}") from exc


@click.group()
def cli() -> None:
    """Inspect Nebula's queues and dead letters."""


@cli.command("queues")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def queues_command(as_json: bool) -> None:
    """Show ready, delayed, unacked and dead messages of every queue."""
    settings = _settings()
    stats = _run(lambda: queues_api.queue_stats(settings))
    if as_json:
        click.echo(json.dumps([stat.asdict() for stat in stats], indent=2))
        return
    header = ("QUEUE", "READY", "DELAYED", "UNACKED", "DEAD", "CONSUMERS")
    rows = [
        (s.name, s.ready, s.delayed, "?" if s.unacked is None else s.unacked, s.dead, "?" if s.consumers is None else s.consumers)
        for s in stats
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


@cli.group("dead-letters")
def dead_letters() -> None:
    """List, requeue or purge dead-lettered messages of a queue."""


@dead_letters.command("list")
@click.argument("queue")
@click.option("--limit", default=100, show_default=True, help="At most this many messages.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (whole messages) instead of a table.")
def list_command(queue: str, limit: int, as_json: bool) -> None:
    """List the dead letters of QUEUE, oldest first."""
    settings = _settings()
    with _broker(settings) as broker:
        letters = _run(lambda: queues_api.list_dead_letters(broker, _queue(settings, queue), limit=limit))
    if as_json:
        click.echo(json.dumps([{**vars(letter), "dead_at": str(letter.dead_at or "")} for letter in letters], indent=2))
        return
    for letter in letters:
        when = letter.dead_at.isoformat(timespec="seconds") if letter.dead_at else "-"
        click.echo(f"{letter.message_id}  {letter.actor_name}  {when}  {letter.reason}")
    click.echo(f"{len(letters)} dead letter(s) in {_queue(settings, queue)}", err=True)


@dead_letters.command("requeue")
@click.argument("queue")
@click.option("--id", "message_ids", multiple=True, help="Only this message id (repeatable).")
def requeue_command(queue: str, message_ids: tuple[str, ...]) -> None:
    """Send the dead letters of QUEUE back to it."""
    settings = _settings()
    with _broker(settings) as broker:
        count = _run(
            lambda: queues_api.requeue_dead_letters(broker, _queue(settings, queue), message_ids or None)
        )
    click.echo(f"requeued {count} message(s) to {_queue(settings, queue)}")


@dead_letters.command("purge")
@click.argument("queue")
@click.confirmation_option(prompt="Delete every dead letter of this queue?")
def purge_command(queue: str) -> None:
    """Delete every dead letter of QUEUE."""
    settings = _settings()
    with _broker(settings) as broker:
        count = _run(lambda: queues_api.purge_dead_letters(broker, _queue(settings, queue)))
    click.echo(f"purged {count} dead letter(s) from {_queue(settings, queue)}")


def main() -> None:
    """Entry point of ``python -m workers.cli``."""
    cli(prog_name="python -m workers.cli")


if __name__ == "__main__":
    main()
