"""The command line: refusals, exit codes, and commands forwarded to app.cli and workers.cli."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from manage_harness import FAKE_NEBULA
from nebula_manage import appcli
from nebula_manage.cli import main


def manage(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "nebula.yml"
    path.write_text(f"nebula:\n  data_dir: {tmp_path / 'data'}\n")
    return path


@pytest.fixture
def forwarded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """Commands manage forwards, instead of running them; they exit with 7."""
    calls: list[tuple[list[str], dict[str, str]]] = []

    def call(argv: list[str], env: dict[str, str]) -> int:
        calls.append((argv, env))
        return 7

    monkeypatch.setattr(appcli.subprocess, "call", call)
    return calls


def test_bad_settings_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    config = tmp_path / "nebula.yml"
    config.write_text(f"nebula:\n  data_dir: {tmp_path / 'data'}\nprocesses:\n  web: {{wokers: 2}}\n")
    for command in ("start", "update", "graceful", "restart", "show", "health"):
        result = manage("-c", str(config), command)
        assert result.exit_code == 4, (command, result.output)
        assert f"{config}:4: processes.web.wokers: unknown key; did you mean workers?" in result.stderr
    assert not (tmp_path / "data").exists()


def test_the_app_refuses_its_own_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(FAKE_NEBULA))  # the stand-in app.cli
    config = tmp_path / "nebula.yml"
    config.write_text(f"nebula:\n  data_dir: {tmp_path / 'data'}\n  refuse_me: 1\n")
    result = manage("-c", str(config), "update")
    assert result.exit_code == 4
    assert f"{config}: nebula.refuse_me: unknown setting" in result.stderr
    assert not (tmp_path / "data").exists()


def test_commands_on_a_stopped_nebula(config: Path) -> None:
    stop = manage("-c", str(config), "stop")
    assert stop.exit_code == 0 and "not running" in stop.output and "nothing to stop" in stop.output
    assert manage("-c", str(config), "shutdown").exit_code == 0
    assert manage("-c", str(config), "status").exit_code == 3
    assert manage("-c", str(config), "pm", "status").exit_code == 3


def test_stop_works_while_the_settings_are_broken(tmp_path: Path) -> None:
    config = tmp_path / "nebula.yml"
    config.write_text(f"nebula:\n  data_dir: {tmp_path / 'data'}\nprocesses:\n  beat: {{processes: 0}}\n")
    result = manage("-c", str(config), "stop")
    assert result.exit_code == 0
    assert "warning: the settings are refused" in result.stderr
    assert f"nothing runs for {tmp_path / 'data'}" in result.stdout


def test_show_prints_the_effective_settings_and_commands(config: Path) -> None:
    result = manage("-c", str(config), "show")
    assert result.exit_code == 0
    assert f"config_file: {config}" in result.output
    assert "-m workers.run worker --queues default,jobs,exports" in result.output


def test_exec_needs_one_program(config: Path) -> None:
    result = manage("-c", str(config), "exec", "nothing")
    assert result.exit_code == 1 and "no program named nothing" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["db", "upgrade"], ["app.cli", "db", "upgrade"]),
        (["db", "current"], ["app.cli", "db", "current"]),
        (["user", "create", "--username", "u", "--email", "u@x.org", "--admin"],
         ["app.cli", "user", "create", "--username", "u", "--email", "u@x.org", "--admin"]),
        (["user", "create", "--username", "u", "--email", "e", "--password", "p"],
         ["app.cli", "user", "create", "--username", "u", "--email", "e", "--password", "p"]),
        (["user", "api-key", "u@x.org"], ["app.cli", "user", "api-key", "u@x.org"]),
        (["queues", "--json"], ["workers.cli", "queues", "--json"]),
        (["dead-letters", "list", "jobs", "--limit", "5"],
         ["workers.cli", "dead-letters", "list", "jobs", "--limit", "5"]),
        (["dead-letters", "purge", "exports", "--yes"],
         ["workers.cli", "dead-letters", "purge", "exports", "--yes"]),
    ],
)
def test_forwarded_commands_keep_their_exit_code(config, forwarded, args, expected) -> None:
    result = manage("-c", str(config), *args)
    assert result.exit_code == 7
    ((argv, env),) = forwarded
    assert argv == [sys.executable, "-P", "-m", *expected]
    assert env["NEBULA_CONFIG"] == str(config)
    assert env["NEBULA_DATA_DIR"] == str(config.parent / "data")


def test_health_is_down_when_nothing_runs(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "nebula_manage.health.app_health",
        lambda deployment: {"database": {"ok": True, "detail": "db"},
                            "broker": {"ok": True, "detail": "broker"}},
    )
    result = manage("-c", str(config), "health", "--json")
    assert result.exit_code == 1
    assert '"ok": false' in result.output and "not running" in result.output


def test_a_state_dir_written_by_another_host_is_not_taken_over(config: Path) -> None:
    state = config.parent / "data" / "supervisor"
    state.mkdir(parents=True)
    (state / "supervisord.conf").write_text("[supervisord]\nidentifier = nebula@otherhost\n")
    result = manage("-c", str(config), "update")
    assert result.exit_code == 1
    assert "belongs to the supervisord of host otherhost" in result.stderr
    assert "processes.state_dir" in result.stderr
    assert not (state / "conf.d").exists()
