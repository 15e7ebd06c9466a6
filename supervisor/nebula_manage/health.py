"""`manage health`: processes, web, database and broker, each ok or down with a reason."""

from __future__ import annotations

from typing import Any

from nebula_manage.appcli import app_health
from nebula_manage.backend import UP
from nebula_manage.operations import Operator
from nebula_manage.probe import web_answers


def health_report(op: Operator) -> dict[str, dict[str, Any]]:
    """{check: {"ok": bool, "detail": str}} for processes, web (if it runs here), database
    and broker."""
    report = {"processes": _processes(op)}
    webs = [p for p in op.programs if p.bind]
    if webs:
        answers = [(p.name, *web_answers(p.bind)) for p in webs]
        report["web"] = {
            "ok": all(ok for _, ok, _ in answers),
            "detail": "; ".join(f"{name}: {detail}" for name, _, detail in answers),
        }
    report.update(app_health(op.deployment))
    return report


def _processes(op: Operator) -> dict[str, Any]:
    if not op.backend.is_running():
        return {"ok": False, "detail": f"not running (nothing runs for {op.deployment.data_dir})"}
    states = op.backend.states()
    down = [
        f"{p.name} {states[p.name].state if p.name in states else 'NOT LOADED'}"
        for p in op.programs
        if p.name not in states or states[p.name].state != UP
    ]
    if down:
        return {"ok": False, "detail": ", ".join(down)}
    return {"ok": True, "detail": f"{len(op.programs)}/{len(op.programs)} running"}
