"""Settings: YAML file, environment, validation messages, the generated sample."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from app.cli import describe_settings_error, sample_section
from app.settings import Settings, SettingsFileError, load_settings


@pytest.fixture
def config(tmp_path, monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("NEBULA_"):
            monkeypatch.delenv(key)
    path = tmp_path / "nebula.yml"
    monkeypatch.setenv("NEBULA_CONFIG", str(path))
    return path


def test_file_then_environment(config, monkeypatch):
    config.write_text("nebula:\n  bind: 0.0.0.0:9000\n  queue_prefix: fromfile.\nprocesses: {}\n")
    assert load_settings().bind == "0.0.0.0:9000"
    monkeypatch.setenv("NEBULA_BIND", "127.0.0.1:9100")
    settings = load_settings()
    assert settings.bind == "127.0.0.1:9100" and settings.queue_prefix == "fromfile."


def test_defaults_are_the_embedded_ones(config):
    config.write_text("")
    settings = load_settings()
    assert settings.uses_embedded_broker
    assert settings.effective_database_url.startswith("sqlite:///") and "nebula.sqlite" in settings.effective_database_url


@pytest.mark.parametrize("text, key", [
    ("nebula:\n  no_such_key: 1\n", "nebula.no_such_key"),
    ("nebula:\n  bind: nowhere\n", "nebula.bind"),
    ("nebula:\n  broker_url: redis://x\n", "nebula.broker_url"),
    ("nebula:\n  job_wall_time: -1\n", "nebula.job_wall_time"),
])
def test_bad_settings_name_file_key_and_why(config, text, key):
    config.write_text(text)
    with pytest.raises(ValidationError) as info:
        load_settings()
    message = describe_settings_error(info.value)
    assert str(config) in message and key in message


def test_unreadable_or_malformed_file(config):
    config.write_text("nebula: [unclosed")
    with pytest.raises(SettingsFileError, match="not valid YAML"):
        load_settings()
    config.write_text("- a list")
    with pytest.raises(SettingsFileError, match="mapping"):
        load_settings()


def test_settings_check_command_exit_codes(config):
    config.write_text("nebula:\n  bogus: 1\n")
    bad = subprocess.run([sys.executable, "-m", "app.cli", "settings", "check"], capture_output=True, text=True)
    assert bad.returncode == 2 and "nebula.bogus" in bad.stderr
    config.write_text("nebula:\n  bind: 127.0.0.1:8081\n")
    good = subprocess.run([sys.executable, "-m", "app.cli", "settings", "check"], capture_output=True, text=True)
    assert good.returncode == 0


def test_sample_section_covers_every_setting_and_parses(config):
    text = sample_section()
    for name, field in Settings.model_fields.items():
        assert f"#{name}:" in text, name
        assert field.description, f"{name} needs a description"
    uncommented = "\n".join(line.replace("#", "", 1) if line.startswith("  #") and ":" in line and not line.startswith("  # ") else line
                            for line in text.splitlines())
    data = yaml.safe_load(uncommented)["nebula"]
    config.write_text(yaml.safe_dump({"nebula": data}))
    assert load_settings().bind == "127.0.0.1:8080"


def test_relative_paths_in_the_file_are_relative_to_it(config, tmp_path, monkeypatch):
    config.write_text("nebula:\n  data_dir: state\n  tool_dirs: [tools, /abs/tools]\n")
    monkeypatch.chdir("/")
    settings = load_settings()
    assert settings.resolved_data_dir == (tmp_path / "state").resolve()
    assert [str(p) for p in settings.tool_dirs] == [str(tmp_path / "tools"), "/abs/tools"]
