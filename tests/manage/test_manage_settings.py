"""Settings validation: bad input is refused with the file, the line, the key and why."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from nebula_manage.config import load_deployment, load_for_control
from nebula_manage.errors import EXIT_SETTINGS, SettingsRefused


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    config = tmp_path / "nebula.yml"
    config.write_text(textwrap.dedent(text))
    return load_deployment(config, environ or {}, sys.executable, tmp_path)


def refusal(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(SettingsRefused) as caught:
        load(tmp_path, text, environ)
    assert caught.value.exit_code == EXIT_SETTINGS
    assert "Nothing was changed." in str(caught.value)
    return caught.value.problems


def test_no_file_means_defaults_for_a_two_core_machine(tmp_path: Path) -> None:
    deployment = load_deployment(None, {}, sys.executable, tmp_path)
    assert deployment.data_dir == tmp_path / "database"
    assert deployment.web_binds == ["127.0.0.1:8080"]
    processes = deployment.processes
    assert (processes.web.workers, processes.web.threads) == (2, 4)
    assert [pool.name for pool in processes.worker_pools] == ["main"]
    assert processes.worker_pools[0].queues == ["default", "jobs", "exports"]
    assert processes.worker_pools[0].processes == 2
    assert processes.beat.processes == 1 and processes.process_manager == "supervisor"


def test_an_empty_section_means_its_defaults(tmp_path: Path) -> None:
    deployment = load(tmp_path, "nebula:\nprocesses:\n  web:\n  beat:\n")
    assert deployment.processes.web.workers == 2


def test_unknown_key_names_file_line_key_and_a_suggestion(tmp_path: Path) -> None:
    problems = refusal(tmp_path, """\
        processes:
          web:
            wrkers: 3
        """)
    assert problems == [f"{tmp_path / 'nebula.yml'}:3: processes.web.wrkers: "
                        "unknown key; did you mean workers?"]


def test_unknown_section(tmp_path: Path) -> None:
    (problem,) = refusal(tmp_path, "nebula: {}\nproceses: {}\n")
    assert problem.endswith(":2: proceses: unknown section; the file has two: nebula and processes")


def test_wrong_type_shows_the_value(tmp_path: Path) -> None:
    (problem,) = refusal(tmp_path, """\
        processes:
          worker_pools:
            - name: main
              threads: many
        """)
    assert ":4: processes.worker_pools.0.threads: Input should be a valid integer" in problem
    assert "(got 'many')" in problem


def test_two_web_instances_on_one_port(tmp_path: Path) -> None:
    (problem,) = refusal(tmp_path, """\
        processes:
          web:
            binds: [127.0.0.1:8080, 0.0.0.0:8080]
        """)
    assert ":3: processes.web.binds: two web instances on port 8080" in problem


@pytest.mark.parametrize("count", [0, 2])
def test_beat_runs_exactly_once(tmp_path: Path, count: int) -> None:
    (problem,) = refusal(tmp_path, f"processes:\n  beat:\n    processes: {count}\n")
    assert f":3: processes.beat.processes: {count} beat processes: exactly one beat" in problem
    assert "enable: false" in problem


def test_beat_may_be_switched_off_on_other_hosts(tmp_path: Path) -> None:
    deployment = load(tmp_path, "processes:\n  beat:\n    enable: false\n")
    assert not deployment.processes.beat.enable


def test_switching_everything_off_is_refused(tmp_path: Path) -> None:
    (problem,) = refusal(tmp_path, """\
        processes:
          web: {enable: false}
          scheduler: {enable: false}
          beat: {enable: false}
          worker_pools: []
        """)
    assert "nothing would run on this host" in problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("processes:\n  web:\n    umask: 022\n", "write the umask quoted"),
        ("processes:\n  web:\n    umask: '099'\n", "is not an octal umask"),
        ("processes:\n  web:\n    graceful_timeout: 30\n    stop_timeout: 30\n",
         "must exceed graceful_timeout"),
        ("processes:\n  web:\n    environment: {'NOT A NAME': x}\n",
         "is not an environment variable name"),
        ("processes:\n  worker_pools: [{name: a}, {name: a}]\n", "two worker pools are named 'a'"),
        ("processes:\n  worker_pools: [{name: Main}]\n", "String should match pattern"),
        ("processes:\n  worker_pools: [{queues: []}]\n", "at least 1 item"),
        ("processes:\n  process_manager: upstart\n", "Input should be 'supervisor' or 'systemd'"),
        ("nebula:\n  bind: localhost\n", "nebula.bind: 'localhost' is not host:port"),
    ],
)
def test_impossible_values(tmp_path: Path, text: str, expected: str) -> None:
    problems = refusal(tmp_path, text)
    assert any(expected in problem for problem in problems), problems


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    (problem,) = refusal(tmp_path, "processes:\n  web: [\n")
    assert problem.startswith(f"{tmp_path / 'nebula.yml'}:")
    assert "not valid YAML" in problem


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsRefused) as caught:
        load_deployment(tmp_path / "absent.yml", {}, sys.executable, tmp_path)
    assert "absent.yml: cannot read it" in str(caught.value)


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    environ = {"NEBULA_DATA_DIR": "elsewhere", "NEBULA_BIND": "0.0.0.0:9000"}
    deployment = load(tmp_path, "nebula:\n  data_dir: /srv/x\n  bind: 127.0.0.1:1\n", environ)
    assert deployment.data_dir == tmp_path / "elsewhere"  # relative to the working directory
    assert deployment.web_binds == ["0.0.0.0:9000"]


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    (problem,) = refusal(tmp_path, "{}\n", {"NEBULA_BIND": "nowhere"})
    assert problem.startswith("environment NEBULA_BIND:")


def test_programs_get_every_nebula_variable_and_absolute_paths(tmp_path: Path) -> None:
    environ = {"NEBULA_DATABASE_URL": "postgresql://x", "NEBULA_CONFIG": "nebula.yml",
               "HOME": "/root"}
    deployment = load(tmp_path, "nebula:\n  data_dir: data\n", environ)
    assert deployment.environment == {
        "NEBULA_CONFIG": str(tmp_path / "nebula.yml"),
        "NEBULA_DATABASE_URL": "postgresql://x",
        "NEBULA_DATA_DIR": str(tmp_path / "data"),
    }


def test_a_data_dir_too_long_for_a_unix_socket(tmp_path: Path) -> None:
    (problem,) = refusal(tmp_path, f"nebula:\n  data_dir: /{'x' * 100}\n")
    assert "too long a path for supervisord's unix socket" in problem


def test_control_commands_still_find_the_data_dir_when_settings_are_refused(
    tmp_path: Path,
) -> None:
    config = tmp_path / "nebula.yml"
    config.write_text("nebula:\n  data_dir: /srv/nebula\nprocesses:\n  beat:\n    processes: 2\n")
    deployment, problems = load_for_control(config, {}, sys.executable, tmp_path)
    assert deployment.data_dir == Path("/srv/nebula")
    assert problems and "processes.beat.processes" in problems[0]


def test_a_state_dir_of_its_own_for_hosts_sharing_the_data_dir(tmp_path: Path) -> None:
    deployment = load(tmp_path, "nebula:\n  data_dir: /shared/nebula\nprocesses:\n  state_dir: local\n")
    assert deployment.data_dir == Path("/shared/nebula")
    assert deployment.state_dir == tmp_path / "local" / "supervisor"
    assert deployment.log_dir == tmp_path / "local" / "logs"
    assert deployment.environment["NEBULA_DATA_DIR"] == "/shared/nebula"
