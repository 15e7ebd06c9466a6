"""deploy/nebula.yml.sample is what `manage init` writes, and it loads as the defaults."""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from nebula_manage.cli import main
from nebula_manage.config import load_deployment
from nebula_manage.sample import app_fields, sample_settings

SAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "nebula.yml.sample"


def test_the_committed_sample_is_current() -> None:
    fields, warning = app_fields(sys.executable)
    assert warning is None, warning
    assert SAMPLE.read_text() == sample_settings(fields), (
        "deploy/nebula.yml.sample is out of date; regenerate it with "
        "`.venv/bin/manage init --stdout > deploy/nebula.yml.sample`"
    )


def test_manage_init_writes_the_sample_and_will_not_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "nebula.yml"
    runner = CliRunner()
    written = runner.invoke(main, ["init", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_text() == SAMPLE.read_text()
    again = runner.invoke(main, ["init", str(target)])
    assert again.exit_code == 1 and "--force" in again.output


def test_the_sample_loads_as_the_defaults(tmp_path: Path) -> None:
    from_sample = load_deployment(SAMPLE, {}, sys.executable, tmp_path)
    defaults = load_deployment(None, {}, sys.executable, tmp_path)
    assert from_sample.processes == defaults.processes
    assert from_sample.data_dir == defaults.data_dir


def test_every_process_setting_is_described() -> None:
    text = SAMPLE.read_text()
    for key in ("binds", "graceful_timeout", "worker_pools", "time_limit", "memory_limit",
                "umask", "start_timeout", "stop_timeout", "environment", "process_manager"):
        assert f"#{key}:" in text or f"#   {key}:" in text, key
