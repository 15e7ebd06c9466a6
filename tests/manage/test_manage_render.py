"""The render function: settings in, supervisord or systemd files out, nothing else touched."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from nebula_manage.config import Deployment
from nebula_manage.errors import SettingsRefused
from nebula_manage.files import GENERATED_MARK
from nebula_manage.render import render
from nebula_manage.settings import ProcessSettings

PY = "/opt/venv/bin/python"


def deployment(processes: dict | None = None, data_dir: str = "/srv/nebula", **env: str) -> Deployment:
    environment = {"NEBULA_DATA_DIR": data_dir, **env}
    return Deployment(
        processes=ProcessSettings.model_validate(processes or {}),
        data_dir=Path(data_dir),
        bind="127.0.0.1:8080",
        python=PY,
        config_path=Path("/etc/nebula.yml"),
        environment=environment,
    )


def program_sections(files: dict[str, str]) -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    for name, text in files.items():
        if name.startswith("conf.d/"):
            parser.read_string(text)
    return {s.split(":", 1)[1]: dict(parser[s]) for s in parser.sections() if s.startswith("program:")}


def test_the_default_supervisor_rendering_runs_the_contract_commands() -> None:
    rendering = render(deployment())
    assert rendering.root == Path("/srv/nebula/supervisor")
    assert sorted(rendering.files) == [
        "conf.d/beat.conf", "conf.d/scheduler.conf", "conf.d/watchdog.conf", "conf.d/web-0.conf",
        "conf.d/worker-main.conf", "supervisord.conf",
    ]
    programs = program_sections(rendering.files)
    commands = {name: shlex.split(section["command"]) for name, section in programs.items()}
    assert commands == {
        "web-0": [PY, "-m", "gunicorn", "--bind", "127.0.0.1:8080", "--workers", "2",
                  "--threads", "4", "--worker-class", "gthread", "--timeout", "60",
                  "--graceful-timeout", "30", "app.api:create_app()"],
        "worker-main": [PY, "-m", "workers.run", "worker", "--queues", "default,jobs,exports",
                        "--processes", "2", "--threads", "4", "--metrics-port", "9191"],
        "scheduler": [PY, "-m", "workers.run", "scheduler", "--processes", "1", "--threads", "2",
                      "--metrics-port", "9192"],
        "beat": [PY, "-m", "workers.beat"],
    }
    assert "--preload" not in commands["web-0"]


def test_stop_semantics_per_program() -> None:
    programs = program_sections(render(deployment()).files)
    for section in programs.values():
        # gunicorn and dramatiq masters pass SIGTERM on themselves; the group is only
        # killed as a last resort
        assert section["stopsignal"] == "TERM"
        assert section["stopasgroup"] == "false"
        assert section["killasgroup"] == "true"
        assert section["autorestart"] == "true"
    assert programs["worker-main"]["stopwaitsecs"] == "660"  # Dramatiq drains for up to 600 s
    assert programs["web-0"]["stopwaitsecs"] == "40"  # above gunicorn's graceful timeout
    assert int(programs["web-0"]["priority"]) > int(programs["worker-main"]["priority"]) > int(
        programs["beat"]["priority"]
    )


def test_the_watchdog_listens_for_exits_and_ticks_only_with_memory_limits() -> None:
    plain = render(deployment()).files["conf.d/watchdog.conf"]
    assert "events = PROCESS_STATE_EXITED,PROCESS_STATE_STOPPED\n" in plain
    limited = render(deployment({"worker_pools": [{"memory_limit": 900}]})).files
    assert "events = PROCESS_STATE_EXITED,PROCESS_STATE_STOPPED,TICK_5\n" in (
        limited["conf.d/watchdog.conf"]
    )
    assert "nebula_manage.watchdog /srv/nebula/supervisor/orphans worker-main=900\n" in (
        limited["conf.d/watchdog.conf"]
    )


def test_every_file_starts_with_the_generated_header() -> None:
    for backend in ("supervisor", "systemd"):
        for text in render(deployment({"process_manager": backend})).files.values():
            assert GENERATED_MARK in text.splitlines()[0]


def test_rendering_is_pure_and_deterministic(tmp_path: Path) -> None:
    settings = deployment(data_dir=str(tmp_path / "data"))
    assert render(settings) == render(settings)
    assert not (tmp_path / "data").exists()


def test_several_web_instances_worker_pools_and_options() -> None:
    rendering = render(deployment({
        "web": {"binds": ["127.0.0.1:8081", "127.0.0.1:8082"]},
        "worker_pools": [
            {"name": "main", "queues": ["default", "jobs"]},
            {"name": "exports", "queues": ["exports"], "processes": 1, "prefetch": 1,
             "time_limit": 1500, "environment": {"EXTRA": "1"}},
        ],
    }))
    programs = program_sections(rendering.files)
    assert sorted(programs) == ["beat", "scheduler", "web-0", "web-1", "worker-exports", "worker-main"]
    assert "--bind 127.0.0.1:8082" in programs["web-1"]["command"]
    assert programs["worker-exports"]["command"].endswith(
        "--queues exports --processes 1 --threads 4 --metrics-port 9201 --prefetch 1 --time-limit 1500"
    )
    assert 'EXTRA="1"' in programs["worker-exports"]["environment"]
    assert "EXTRA" not in programs["worker-main"]["environment"]


def test_a_workers_only_host() -> None:
    rendering = render(deployment({
        "web": {"enable": False}, "scheduler": {"enable": False}, "beat": {"enable": False},
    }))
    assert sorted(rendering.files) == [
        "conf.d/watchdog.conf", "conf.d/worker-main.conf", "supervisord.conf"
    ]


def test_supervisord_reads_the_rendering_back_exactly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"NEBULA_DATABASE_URL": "postgresql://u:p%40ss@h/db",
           "NEBULA_BROKER_URL": "amqp://g:g@h:5672/%2F", "NEBULA_X": "a b,c'd = x#y;z"}
    settings = deployment({"web": {"memory_limit": 512}}, str(data_dir), **env)
    rendering = render(settings)
    for name, text in rendering.files.items():
        (rendering.root / name).parent.mkdir(parents=True, exist_ok=True)
        (rendering.root / name).write_text(text)
    (data_dir / "logs").mkdir()
    options = ServerOptions()
    options.realize(args=["-c", str(rendering.root / "supervisord.conf")])
    configs = {c.name: c for group in options.process_group_configs for c in group.process_configs}
    assert set(configs) == {"beat", "scheduler", "worker-main", "web-0", "watchdog"}
    web = configs["web-0"]
    assert web.environment == settings.environment
    assert shlex.split(web.command) == [PY, "-m", "gunicorn", "--bind", "127.0.0.1:8080",
                                        "--workers", "2", "--threads", "4", "--worker-class",
                                        "gthread", "--timeout", "60", "--graceful-timeout", "30",
                                        "app.api:create_app()"]
    assert (web.stopasgroup, web.killasgroup, web.stopwaitsecs, web.umask) == (False, True, 40, 0o22)
    watchdog = next(g for g in options.process_group_configs if g.name == "watchdog")
    assert shlex.split(configs["watchdog"].command)[-4:] == [
        "-m", "nebula_manage.watchdog", f"{data_dir}/supervisor/orphans", "web-0=512:hup"
    ]
    assert {e.__name__ for e in watchdog.pool_events} == {
        "ProcessStateExitedEvent", "ProcessStateStoppedEvent", "Tick5Event"
    }
    assert options.serverurl == f"unix://{data_dir}/supervisor/supervisord.sock"


@pytest.mark.parametrize("value", ['"quoted"', "both ' and \"", "x ;comment", "line\nbreak"])
def test_values_supervisord_cannot_carry_are_refused(value: str) -> None:
    with pytest.raises(SettingsRefused) as caught:
        render(deployment(NEBULA_SECRET=value))
    assert "the value of NEBULA_SECRET cannot pass through supervisord" in str(caught.value)
    assert value not in str(caught.value)  # it may be a password


def test_systemd_units_and_target() -> None:
    rendering = render(deployment({
        "process_manager": "systemd",
        "systemd": {"user": "nebula", "group": "nebula"},
        "web": {"binds": ["127.0.0.1:8081", "127.0.0.1:8082"], "memory_limit": 1024},
    }, NEBULA_X='50% "off" $HOME'))
    assert rendering.root == Path("/etc/systemd/system")
    assert sorted(rendering.files) == [
        "nebula-beat.service", "nebula-scheduler.service", "nebula-web-0.service",
        "nebula-web-1.service", "nebula-worker-main.service", "nebula.target",
    ]
    target = rendering.files["nebula.target"]
    assert "Wants=nebula-beat.service nebula-scheduler.service nebula-worker-main.service " \
           "nebula-web-0.service nebula-web-1.service" in target
    assert "WantedBy=multi-user.target" in target
    web = rendering.files["nebula-web-0.service"]
    for line in [
        f'ExecStart="{PY}" "-m" "gunicorn" "--bind" "127.0.0.1:8081"',
        "ExecReload=/bin/kill -HUP $MAINPID",
        "PartOf=nebula.target",
        "KillMode=mixed",  # SIGTERM to the master only, SIGKILL to all at the timeout
        "TimeoutStopSec=40",
        "MemoryMax=1024M",
        "User=nebula",
        "UMask=0022",
        "WorkingDirectory=/srv/nebula",
        'Environment="NEBULA_X=50%% \\"off\\" $HOME"',
    ]:
        assert line in web, line
    worker = rendering.files["nebula-worker-main.service"]
    assert "TimeoutStopSec=660" in worker and "ExecReload" not in worker


def test_systemd_user_units() -> None:
    rendering = render(deployment({"process_manager": "systemd", "systemd": {"scope": "user"}}))
    assert rendering.root == Path("~/.config/systemd/user").expanduser()
    assert "WantedBy=default.target" in rendering.files["nebula.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    settings = deployment({"process_manager": "systemd", "systemd": {"unit_dir": str(tmp_path)},
                           "web": {"binds": ["127.0.0.1:8081", "127.0.0.1:8082"]}},
                          NEBULA_X='a "b" $c %d')
    rendering = render(settings)
    paths = []
    for name, text in rendering.files.items():
        (tmp_path / name).write_text(text.replace(PY, shutil.which("true") or "/bin/true"))
        paths.append(str(tmp_path / name))
    done = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_each_worker_pool_gets_its_own_metrics_port():
    from nebula_manage.programs import SCHEDULER_METRICS_PORT, worker_metrics_port

    ports = [worker_metrics_port(i) for i in range(5)] + [SCHEDULER_METRICS_PORT, 9193]
    assert len(set(ports)) == len(ports)
