"""The OpenAPI document, generated from the endpoints' pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, TypeAdapter

from app.api.routing import ApiBlueprint

_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
REF = "#/components/schemas/{model}"


def _schema(annotation: Any, components: dict[str, Any]) -> dict[str, Any]:
    schema = TypeAdapter(annotation).json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        components[annotation.__name__] = schema
        return {"$ref": REF.format(model=annotation.__name__)}
    return schema


def openapi_document(blueprints: list[ApiBlueprint], version: str) -> dict[str, Any]:
    """OpenAPI 3.1 for every endpoint of the blueprints."""
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    for bp in blueprints:
        for ep in bp.endpoints:
            path = _PARAM.sub(r"{\1}", ep.rule)
            for method in ep.methods:
                op: dict[str, Any] = {
                    "summary": ep.summary,
                    "operationId": f"{ep.name}_{method.lower()}",
                    "tags": ep.tags,
                    "parameters": [
                        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                        for name in _PARAM.findall(ep.rule)
                    ],
                    "responses": {
                        "200": {"description": "OK", "content": {"application/json": {
                            "schema": _schema(ep.response, components) if ep.response is not None else {}}}},
                        "4XX": {"description": "Error", "content": {"application/json": {"schema": {
                            "type": "object", "properties": {"err_msg": {"type": "string"},
                                                             "err_code": {"type": "integer"}}}}}},
                    },
                }
                if ep.query is not None:
                    for name, field in ep.query.model_fields.items():
                        op["parameters"].append({"name": name, "in": "query", "required": field.is_required(),
                                                 "description": field.description or "",
                                                 "schema": TypeAdapter(field.annotation).json_schema()})
                if ep.body is not None:
                    op["requestBody"] = {"required": True, "content": {
                        "application/json": {"schema": _schema(ep.body, components)}}}
                if ep.auth:
                    op["security"] = [{"apiKey": []}]
                paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Nebula", "version": version,
                 "description": "A Galaxy-compatible workflow and task server."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
    }
