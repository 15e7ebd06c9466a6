"""The Flask app factory: blueprints, error mapping, version and OpenAPI document."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, json, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from app.api import datasets, histories, tasks, tools, tus, users
from app.api import bulk, exports, short_term_storage
from app.api import invocations, workflows
from app.api import collections, jobs
from app.api.context import current
from app import metrics
from app.api.openapi import openapi_document
from app.errors import NebulaError
from app.logs import configure_logging
from app.services.registry import Services, build_services
from app.settings import Settings, load_settings

log = logging.getLogger(__name__)

VERSION_MAJOR = "26.1"
VERSION_MINOR = "0"

# Every blueprint of the API, registered in this order.
BLUEPRINTS = [users.bp, histories.bp, datasets.bp, tools.bp, tus.bp, tasks.bp, exports.bp, short_term_storage.bp, bulk.bp, workflows.bp, invocations.bp, jobs.bp, collections.bp]


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the web app for the settings (read from the environment when not given)."""
    settings = settings or (services.settings if services else load_settings())
    configure_logging(settings, "web")
    app = Flask("nebula")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_size
    app.json.sort_keys = False
    app.extensions["nebula"] = services or build_services(settings)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    app.add_url_rule("/api/version", "version", version)
    app.add_url_rule("/api/openapi.json", "openapi", lambda: Response(
        json.dumps(openapi_document(BLUEPRINTS, VERSION_MAJOR)), mimetype="application/json"))
    metrics.init_app(app, settings)
    app.register_error_handler(NebulaError, _nebula_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    app.before_request(_start_timer)
    app.teardown_request(_close_session)
    app.after_request(_log_request)
    return app


def version() -> Response:
    """GET /api/version, compared as a string by BioBlend."""
    return Response(json.dumps({"version_major": VERSION_MAJOR, "version_minor": VERSION_MINOR,
                                "extra": {"name": "nebula"}}), mimetype="application/json")


def _error(status: int, code: int, message: str) -> Response:
    body = {"err_msg": message, "err_code": code}
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _nebula_error(exc: NebulaError) -> Response:
    _rollback()
    return _error(exc.status, exc.err_code, exc.message)


def _http_error(exc: HTTPException) -> Response:
    _rollback()
    status = exc.code or 500
    if isinstance(exc, RequestEntityTooLarge):
        return _error(413, 413001, "request body over the configured size limit")
    return _error(status, status * 1000 + 1, exc.description or exc.name)


def _unexpected_error(exc: Exception) -> Response:
    _rollback()
    log.exception("unhandled error serving %s %s", request.method, request.path)
    return _error(500, 500001, "internal error; see the server log")


def _rollback() -> None:
    ctx = g.get("nebula")
    if ctx is not None and ctx._session is not None:
        ctx._session.rollback()


def _start_timer() -> None:
    g.nebula_start = time.perf_counter()
    current()


def _close_session(_exc: BaseException | None) -> None:
    ctx = g.pop("nebula", None)
    if ctx is not None:
        ctx.close()


def _log_request(response: Response) -> Response:
    elapsed = time.perf_counter() - g.get("nebula_start", time.perf_counter())
    log.info("request", extra={"method": request.method, "path": request.path,
                               "status": response.status_code, "ms": round(elapsed * 1000, 2)})
    return response
