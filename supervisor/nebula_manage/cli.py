"""`manage`: run Nebula's services from one settings file, as Gravity's galaxyctl runs Galaxy.

Exit codes: 0 done (or already so), 1 failed or unhealthy, 2 usage, 3 not running,
4 settings refused (nothing changed); forwarded commands exit with their own code.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

from nebula_manage import operations
from nebula_manage.appcli import check_app_settings, run_forwarded
from nebula_manage.backend import Backend
from nebula_manage.backend_supervisor import SupervisorBackend
from nebula_manage.backend_systemd import SystemdBackend
from nebula_manage.config import Deployment, config_path_from, load_deployment, load_for_control
from nebula_manage.errors import ManageError, NotRunning
from nebula_manage.health import health_report
from nebula_manage.operations import Operator
from nebula_manage.sample import app_fields, sample_settings

BACKENDS: dict[str, type[Backend]] = {"supervisor": SupervisorBackend, "systemd": SystemdBackend}
PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


def say(line: str) -> None:
    """Report progress on stdout."""
    click.echo(line)


@dataclass
class Session:
    """What every command shares: the settings file named on the command line."""

    config_option: str | None

    @property
    def config_path(self) -> Path | None:
        """The settings file, from -c or NEBULA_CONFIG."""
        return config_path_from(self.config_option, os.environ)

    def deployment(self) -> Deployment:
        """The validated deployment; refuses bad settings."""
        return load_deployment(self.config_path, os.environ, sys.executable, Path.cwd())

    def operator(self, check_app: bool = False) -> Operator:
        """An operator on valid settings, checked by the app too when asked."""
        deployment = self.deployment()
        if check_app:
            check_app_settings(deployment)
        return Operator(deployment, BACKENDS[deployment.processes.process_manager](deployment), say)

    def control(self, quiet: bool = False) -> Operator:
        """An operator that still works when the settings are refused (to stop or inspect)."""
        deployment, problems = load_for_control(
            self.config_path, os.environ, sys.executable, Path.cwd()
        )
        if problems and not quiet:
            click.echo("manage: warning: the settings are refused, acting only on what runs in "
                       f"{deployment.data_dir}:", err=True)
            for problem in problems:
                click.echo(f"  {problem}", err=True)
        backend = BACKENDS[deployment.processes.process_manager](deployment)
        return Operator(deployment, backend, say, known_programs=not problems)


class ManageGroup(click.Group):
    """A click group that turns ManageError into its message and exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ManageError as exc:
            click.echo(f"manage: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=ManageGroup)
@click.option(
    "-c", "--config", "config", metavar="FILE",
    help="Settings file (default: $NEBULA_CONFIG; without one, the defaults).",
)
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """Run Nebula's web, workers, scheduler and beat from one settings file.

    Exit codes: 0 done (or already so), 1 failed or unhealthy, 2 usage error,
    3 not running, 4 settings refused (nothing was changed).
    """
    ctx.obj = Session(config)


pass_session = click.make_pass_decorator(Session)
names_argument = click.argument("names", nargs=-1, metavar="[PROGRAM|KIND]...")
timeout_option = click.option(
    "--timeout", type=float, help="Seconds to wait for health (default: start_timeout + 30)."
)


@main.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the sample instead.")
@pass_session
def init(session: Session, path: Path | None, force: bool, to_stdout: bool) -> None:
    """Write a commented sample settings file (PATH, default: -c or ./nebula.yml)."""
    fields, warning = app_fields(sys.executable)
    if warning:
        click.echo(f"manage: warning: {warning}", err=True)
    text = sample_settings(fields)
    if to_stdout:
        click.echo(text, nl=False)
        return
    target = path or session.config_path or Path("nebula.yml")
    if target.exists() and not force:
        raise ManageError(f"{target} exists; --force overwrites it")
    target.write_text(text)
    say(f"wrote {target}; edit it, then run `manage -c {target} start`")


@main.command()
@click.option("-f", "--foreground", is_flag=True, help="Run supervisord in the foreground.")
@timeout_option
@names_argument
@pass_session
def start(
    session: Session, foreground: bool, timeout: float | None, names: tuple[str, ...]
) -> None:
    """Start Nebula (or the programs named) and wait until it is healthy."""
    op = session.operator(check_app=True)
    if foreground:
        _exec_foreground(op)
    sys.exit(operations.start(op, names, timeout))


def _exec_foreground(op: Operator) -> None:
    if op.backend.is_running():
        raise ManageError("Nebula is already running in the background; `manage stop` it first")
    command = op.backend.foreground_command()
    if command is None:
        raise ManageError(f"{op.backend.name} cannot run in the foreground; use `manage start`")
    operations.write_files(op)
    argv, env = command
    os.chdir(op.deployment.data_dir)
    os.execve(argv[0], argv, env)


@main.command()
@names_argument
@pass_session
def stop(session: Session, names: tuple[str, ...]) -> None:
    """Stop everything, supervisord included (or only the programs named)."""
    sys.exit(operations.stop(session.control(), names))


@main.command()
@timeout_option
@names_argument
@pass_session
def restart(session: Session, timeout: float | None, names: tuple[str, ...]) -> None:
    """Stop and start the programs (requests fail meanwhile; see graceful)."""
    sys.exit(operations.restart(session.operator(check_app=True), names, timeout))


@main.command()
@timeout_option
@names_argument
@pass_session
def graceful(session: Session, timeout: float | None, names: tuple[str, ...]) -> None:
    """Reload without failing requests: web one instance at a time, workers after their
    messages in flight. Starts a stopped Nebula."""
    sys.exit(operations.graceful(session.operator(check_app=True), names, timeout))


@main.command()
@names_argument
@pass_session
def status(session: Session, names: tuple[str, ...]) -> None:
    """Show each program's state (exit 0 all running, 1 some not, 3 not running)."""
    sys.exit(operations.status(session.control(), names))


@main.command()
@click.option("--force", is_flag=True, help="Rewrite every file and restart every program.")
@pass_session
def update(session: Session, force: bool) -> None:
    """Render the configuration, write what changed and apply it."""
    sys.exit(operations.update(session.operator(check_app=True), force))


@main.command()
@pass_session
def shutdown(session: Session) -> None:
    """Stop supervisord (it stops every program first)."""
    sys.exit(operations.shutdown(session.control()))


@main.command()
@pass_session
def follow(session: Session) -> None:
    """Follow every program's log."""
    argv = session.control().backend.follow_command()
    os.execvp(argv[0], argv)


@main.command("exec")
@click.argument("service")
@pass_session
def exec_(session: Session, service: str) -> None:
    """Run one program (web-0, worker-main, scheduler, beat...) in the foreground."""
    op = session.operator()
    chosen = op.chosen([service])
    if len(chosen) != 1:
        raise ManageError(f"{service} names {len(chosen)} programs; name one: "
                          + ", ".join(p.name for p in chosen))
    program = chosen[0]
    op.deployment.data_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(op.deployment.data_dir)
    os.umask(int(program.umask, 8))
    os.execve(program.argv[0], program.argv, {**os.environ, **program.environment})


@main.command(context_settings=PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@pass_session
def pm(session: Session, args: tuple[str, ...]) -> None:
    """Pass ARGS to supervisorctl (or systemctl)."""
    op = session.control(quiet=True)
    if op.backend.name == "supervisor" and not op.backend.is_running():
        raise NotRunning(f"Nebula is not running (nothing runs for {op.deployment.data_dir})")
    sys.exit(subprocess.call(op.backend.control_command(list(args))))


@main.command()
@pass_session
def show(session: Session) -> None:
    """Show the effective settings and the programs they run."""
    op = session.operator()
    deployment = op.deployment
    effective = {
        "config_file": str(deployment.config_path) if deployment.config_path else None,
        "data_dir": str(deployment.data_dir),
        "bind": deployment.bind,
        "process_manager": deployment.processes.process_manager,
        "environment passed to every program": sorted(deployment.environment),
        "programs": {
            p.name: {"command": shlex.join(p.argv), "reload": p.reload.value,
                     "stop_timeout": p.stop_timeout}
            for p in op.programs
        },
        "processes": deployment.processes.model_dump(mode="json"),
    }
    click.echo(yaml.safe_dump(effective, sort_keys=False, width=100), nl=False)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_session
def health(session: Session, as_json: bool) -> None:
    """Check processes, web, database and broker (exit 1 when one is down)."""
    report = health_report(session.operator())
    healthy = all(check["ok"] for check in report.values())
    if as_json:
        click.echo(json.dumps({**report, "ok": healthy}, indent=2))
    else:
        for name, check in report.items():
            say(f"{name:<10} {'ok' if check['ok'] else 'DOWN':<5} {check['detail']}")
    sys.exit(0 if healthy else 1)


def _forward(session: Session, module: str, *args: str) -> None:
    sys.exit(run_forwarded(session.control(quiet=True).deployment, module, list(args)))


@main.group()
def db() -> None:
    """Database migrations (app.cli db)."""


@db.command(context_settings=PASS_THROUGH)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@pass_session
def upgrade(session: Session, extra: tuple[str, ...]) -> None:
    """Upgrade the database to the newest schema."""
    _forward(session, "app.cli", "db", "upgrade", *extra)


@db.command(context_settings=PASS_THROUGH)
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@pass_session
def current(session: Session, extra: tuple[str, ...]) -> None:
    """Show the database's schema revision."""
    _forward(session, "app.cli", "db", "current", *extra)


@main.group()
def user() -> None:
    """Users and API keys (app.cli user)."""


@user.command("create")
@click.option("--username", required=True)
@click.option("--email", required=True)
@click.option("--password", help="Default: the app asks, or makes one.")
@click.option("--admin", is_flag=True, help="Make the user an admin.")
@pass_session
def user_create(
    session: Session, username: str, email: str, password: str | None, admin: bool
) -> None:
    """Create a user."""
    args = ["user", "create", "--username", username, "--email", email]
    args += ["--password", password] if password is not None else []
    args += ["--admin"] if admin else []
    _forward(session, "app.cli", *args)


@user.command("api-key")
@click.argument("username_or_email")
@pass_session
def user_api_key(session: Session, username_or_email: str) -> None:
    """Make a new API key for a user and print it."""
    _forward(session, "app.cli", "user", "api-key", username_or_email)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_session
def queues(session: Session, as_json: bool) -> None:
    """Show each queue's ready, delayed and dead messages (workers.cli queues)."""
    _forward(session, "workers.cli", "queues", *(["--json"] if as_json else []))


@main.command("dead-letters", context_settings=PASS_THROUGH)
@click.argument("action", type=click.Choice(["list", "requeue", "purge"]))
@click.argument("queue")
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@pass_session
def dead_letters(session: Session, action: str, queue: str, extra: tuple[str, ...]) -> None:
    """List, requeue or purge a queue's dead letters (workers.cli dead-letters)."""
    _forward(session, "workers.cli", "dead-letters", action, queue, *extra)


if __name__ == "__main__":
    main(prog_name="manage")
