"""setup.cfg lists every package, and the supervisor/ folder can never shadow supervisord."""

from __future__ import annotations

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = {line.strip() for line in config["options"]["packages"].splitlines() if line.strip()}
    found = {str(p.parent.relative_to(ROOT)).replace("/", ".") for top in ("app", "workers")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found - listed == set(), "add these to [options] packages in setup.cfg"
    assert "nebula_manage" in listed


def test_supervisor_folder_is_not_a_package():
    assert not (ROOT / "supervisor" / "__init__.py").exists()
