"""Neutron's error contract: every failure is a NeutronError body with Neutron's type name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Error messages echo client input (names, values, headers): bounded, so a 10 MB field
# does not come back whole. An echoed value gets ECHO_CHARS, a whole message
# MESSAGE_CHARS, cut in the middle so the head (what) and the tail (why) both stay.
ECHO_CHARS = 100
MESSAGE_CHARS = 1000


def shorten(text: object, limit: int = ECHO_CHARS) -> str:
    """`text` as a string of at most about `limit` characters, marking what was cut."""
    s = str(text)
    if len(s) <= limit:
        return s
    keep = max(limit - 40, 8)
    head, tail = keep * 2 // 3, keep - keep * 2 // 3
    return f"{s[:head]}...({len(s) - head - tail} characters omitted)...{s[-tail:]}"


class NeutronError(Exception):
    """An API failure; `type` is the Neutron exception class name clients match on."""

    status = 500
    type = "NeutronError"
    # Response headers the error owes the client (WWW-Authenticate, Allow, Retry-After).
    headers: Mapping[str, str] = {}

    def __init__(self, message: str, *, type: str | None = None, status: int | None = None):
        message = shorten(message, MESSAGE_CHARS)
        super().__init__(message)
        self.message = message
        if type is not None:
            self.type = type
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return {"NeutronError": {"type": self.type, "message": self.message, "detail": ""}}


class BadRequest(NeutronError):
    status = 400
    type = "HTTPBadRequest"


class InvalidInput(BadRequest):
    type = "InvalidInput"

    def __init__(self, message: str, *, type: str | None = None):
        super().__init__(f"Invalid input for operation: {message}", type=type)


class NotAuthorized(NeutronError):
    """401: says how to authenticate (RFC 9110), as keystonemiddleware's `Keystone uri=`
    does; ours is a bearer token (X-Auth-Token or Authorization: Bearer)."""

    status = 401
    type = "NotAuthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="wyvern"'}


class PolicyNotAuthorized(NeutronError):
    status = 403
    type = "PolicyNotAuthorized"

    def __init__(self, action: str):
        super().__init__(f"rule:{action} is disallowed by policy")


class NotFound(NeutronError):
    status = 404
    type = "NotFound"


class Conflict(NeutronError):
    status = 409
    type = "Conflict"


class PreconditionFailed(NeutronError):
    status = 412
    type = "PreconditionFailed"


class ServiceUnavailable(NeutronError):
    """503: the store cannot serve now; the same request may succeed later."""

    status = 503
    type = "ServiceUnavailable"
    headers = {"Retry-After": "1"}


class NotImplementedOp(NeutronError):
    status = 501
    type = "NotImplemented"


def not_found(resource: str, id_: str) -> NotFound:
    """Also what another project's resource looks like: existence is not leaked."""
    type_name = "".join(p.capitalize() for p in resource.replace("-", "_").split("_")) + "NotFound"
    label = resource.replace("_", " ")
    return NotFound(f"{label.capitalize()} {id_} could not be found.", type=type_name)


def conflict(type: str, message: str) -> Conflict:
    return Conflict(message, type=type)


def bad_request(type: str, message: str) -> BadRequest:
    return BadRequest(message, type=type)


class RetryRequest(Exception):
    """An optimistic-concurrency guard failed: re-read and run the operation again."""
