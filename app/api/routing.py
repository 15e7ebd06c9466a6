"""Declaring API endpoints: body and query parsing with pydantic, JSON answers, OpenAPI.

Written here rather than taken from flask-openapi3 or spectree because Galaxy's API has
rules those fight: bodies read leniently (a JSON Content-Type on a GET without a body,
form fields carrying JSON, multipart uploads), errors as ``{"err_msg", "err_code"}`` with
Galaxy's codes, and POST answering 200.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, request
from pydantic import BaseModel, ValidationError

from app.errors import BadRequest, PayloadTooLarge, RequestParameterInvalid


@dataclass
class Endpoint:
    """What the OpenAPI document needs to know of one route."""

    rule: str
    methods: list[str]
    name: str
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    auth: bool = True
    tags: list[str] = field(default_factory=list)


class ApiBlueprint(Blueprint):
    """A Blueprint whose ``endpoint`` decorator parses input and records OpenAPI metadata."""

    def __init__(self, name: str, import_name: str, **kwargs: Any):
        super().__init__(name, import_name, **kwargs)
        self.endpoints: list[Endpoint] = []

    def endpoint(
        self,
        rule: str,
        methods: list[str] | str = "GET",
        *,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        auth: bool = True,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a view; it is called with path values, then ``body=`` / ``query=`` models."""
        methods = [methods] if isinstance(methods, str) else list(methods)

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            doc = (view.__doc__ or view.__name__).strip().splitlines()[0]
            name = f"{view.__name__}_{'_'.join(m.lower() for m in methods)}_{len(self.endpoints)}"
            self.endpoints.append(
                Endpoint(rule, methods, view.__name__, doc, body, query, response, auth, [self.name])
            )

            @functools.wraps(view)
            def wrapper(**path: Any) -> Response:
                from app.api.context import current

                ctx = current()
                if auth:
                    ctx.require_user()
                kwargs: dict[str, Any] = dict(path)
                if body is not None:
                    kwargs["body"] = parse_model(body, read_body())
                if query is not None:
                    kwargs["query"] = parse_model(query, read_query(query))
                result = view(**kwargs)
                ctx.commit()
                return to_response(result)

            self.add_url_rule(rule, endpoint=name, view_func=wrapper, methods=methods)
            return view

        return decorate


def read_body() -> dict[str, Any]:
    """The request body as a dict: JSON, form fields (JSON-decoded where they hold JSON), or {}."""
    max_json = _max_json_size()
    is_multipart = (request.mimetype or "").startswith("multipart/")
    if request.content_length and request.content_length > max_json and not is_multipart:
        raise PayloadTooLarge(f"request body over {max_json} bytes")
    if request.mimetype == "application/x-www-form-urlencoded" and _looks_like_json(request.get_data(cache=True)):
        pass  # `curl -d '{...}'` sends JSON under the form content type; read it as JSON
    elif request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        data: dict[str, Any] = {}
        for key in request.form:
            value = request.form[key]
            data[key] = _maybe_json(value) if key in ("inputs", "payload", "targets") else value
        if isinstance(data.get("payload"), dict):
            data = {**data.pop("payload"), **data}
        return data
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    if len(raw) > max_json:
        raise PayloadTooLarge(f"request body over {max_json} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON in request body: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _looks_like_json(raw: bytes) -> bool:
    return raw.lstrip()[:1] in (b"{", b"[")


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _max_json_size() -> int:
    from app.api.context import current

    return current().settings.max_json_size


def read_query(model: type[BaseModel]) -> dict[str, Any]:
    """Query parameters as a dict; fields typed as lists collect repeated parameters."""
    data: dict[str, Any] = {}
    for key in request.args:
        info = model.model_fields.get(key)
        is_list = info is not None and "list" in str(info.annotation).lower()
        values = request.args.getlist(key)
        if is_list:
            data[key] = [v for item in values for v in item.split(",") if v]
        else:
            data[key] = values[-1]
    return data


def parse_model(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """Validate data against a model, turning errors into a 400 that names the fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestParameterInvalid(describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """One readable sentence per problem: 'name: Field required; hid: ...'."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def to_response(result: Any) -> Response:
    """Turn a view's return value into a JSON response (a Response passes through)."""
    if isinstance(result, Response):
        return result
    payload = dump(result)
    return Response(json.dumps(payload), status=200, mimetype="application/json")


def dump(value: Any) -> Any:
    """JSON-ready form of models, lists and dicts of models."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    return value
