"""Nebula's error hierarchy; one handler in app.api maps it to Galaxy's JSON errors."""

from __future__ import annotations


class NebulaError(Exception):
    """Base error: an HTTP status, Galaxy's numeric err_code, and a message for the client."""

    status = 500
    err_code = 500001

    def __init__(self, message: str, **extra: object):
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadRequest(NebulaError):
    """The request is malformed or names something invalid."""

    status = 400
    err_code = 400001


class RequestParameterInvalid(BadRequest):
    """A parameter has the wrong type or value."""

    err_code = 400008


class RequestParameterMissing(BadRequest):
    """A required parameter is missing."""

    err_code = 400009


class AuthenticationRequired(NebulaError):
    """No API key was given where one is needed."""

    status = 403
    err_code = 403001


class AuthenticationFailed(NebulaError):
    """The API key given is not valid."""

    status = 401
    err_code = 401001


class Forbidden(NebulaError):
    """The user may not do this (e.g. an admin-only action)."""

    status = 403
    err_code = 403002


class NotFound(NebulaError):
    """No such object, or it belongs to another user (the two are indistinguishable)."""

    status = 404
    err_code = 404001


class Conflict(NebulaError):
    """The object is in a state that does not allow the action."""

    status = 409
    err_code = 409001


class PayloadTooLarge(NebulaError):
    """The request body is over the configured limit."""

    status = 413
    err_code = 413001
