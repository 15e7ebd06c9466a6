"""The render function: settings in, the files of the chosen process manager out.

Pure: it reads no files and no environment, so the same Deployment always renders the
same text, and tests call it directly.
"""

from __future__ import annotations

from nebula_manage.config import Deployment
from nebula_manage.files import Rendering
from nebula_manage.render_supervisor import render_supervisor
from nebula_manage.render_systemd import render_systemd

RENDERERS = {"supervisor": render_supervisor, "systemd": render_systemd}


def render(deployment: Deployment) -> Rendering:
    """The files that configure the deployment's process manager."""
    return RENDERERS[deployment.processes.process_manager](deployment)
