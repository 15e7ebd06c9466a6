"""Is a web instance answering? ``GET http://{bind}/api/version``, no proxies."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def version_url(bind: str) -> str:
    """The /api/version URL of a host:port bind (wildcard hosts probed on loopback)."""
    host, _, port = bind.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"http://{host}:{port}/api/version"


def web_answers(bind: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(True, version) when the instance answers 200 with JSON, else (False, why)."""
    url = version_url(bind)
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            body = json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {getattr(exc, 'reason', exc)}"
    if isinstance(body, dict) and "version_major" in body:
        return True, f"{url} version {body['version_major']}"
    return True, f"{url} answered"
