"""Running Nebula's own command lines (``app.cli``, ``workers.cli``) as subprocesses.

manage never imports ``app`` or ``workers``; it runs them by module path with the same
Python and the environment the programs get, so they read the same settings.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from nebula_manage.config import Deployment
from nebula_manage.errors import SettingsRefused

CHECK_TIMEOUT = 120


def command(deployment: Deployment, module: str, *args: str) -> list[str]:
    """argv running ``python -m module args``; -P keeps the working directory off sys.path."""
    return [deployment.python, "-P", "-m", module, *args]


def environment(deployment: Deployment) -> dict[str, str]:
    """This process's environment with the programs' NEBULA_* variables on top."""
    return {**os.environ, **deployment.environment}


def run_forwarded(deployment: Deployment, module: str, args: list[str]) -> int:
    """Run a Nebula command in the foreground and return its exit code."""
    try:
        return subprocess.call(command(deployment, module, *args), env=environment(deployment))
    except KeyboardInterrupt:
        return 130


def check_app_settings(deployment: Deployment) -> None:
    """Refuse when ``app.cli settings check`` rejects the nebula: section (or cannot run)."""
    try:
        done = subprocess.run(
            command(deployment, "app.cli", "settings", "check"),
            env=environment(deployment),
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise SettingsRefused([f"app.cli settings check took longer than {CHECK_TIMEOUT} s"])
    if done.returncode != 0:
        said = (done.stderr.strip() + "\n" + done.stdout.strip()).strip().splitlines()
        source = str(deployment.config_path) if deployment.config_path else None
        problems = said or [f"app.cli settings check exited with {done.returncode}"]
        raise SettingsRefused(problems, source)


def app_health(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """Database and broker checks from ``app.cli health --json`` (both down if it fails)."""
    try:
        done = subprocess.run(
            command(deployment, "app.cli", "health", "--json"),
            env=environment(deployment),
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return _both_down(f"app.cli health did not run: {exc}")
    try:
        report = json.loads(done.stdout)
        return {
            key: {"ok": bool(report[key]["ok"]), "detail": str(report[key].get("detail", ""))}
            for key in ("database", "broker")
        }
    except (ValueError, KeyError, TypeError):
        last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        return _both_down(f"app.cli health gave no report: {last}")


def _both_down(detail: str) -> dict[str, dict[str, Any]]:
    return {"database": {"ok": False, "detail": detail}, "broker": {"ok": False, "detail": detail}}
