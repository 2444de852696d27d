"""Bounds on what a client may send: body size, body read time and JSON nesting.

The body bounds are an ASGI middleware so they hold before anything buffers the body:
a declared Content-Length over the limit is refused at once, and a chunked body is
counted as it streams. The handler sees the overrun or the timeout as a NeutronError
raised from `receive()`, so the error takes the usual path to the client.
"""

from __future__ import annotations

from typing import Any

import anyio
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wyvern.api.errors import BadRequest, NeutronError

# orjson refuses to serialise past 254 levels, and a stored object sits a few levels
# below its request body: anything deeper than this is refused on the way in.
MAX_JSON_DEPTH = 64


class RequestEntityTooLarge(NeutronError):
    status = 413
    type = "HTTPRequestEntityTooLarge"

    def __init__(self) -> None:
        super().__init__("Request is too large.")


class RequestTimeout(NeutronError):
    status = 408
    type = "HTTPRequestTimeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(f"The request body was not received within {seconds:g} seconds.")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BoundedBody:
    """413 past `max_size` bytes (before reading on); 408 when the whole body has not
    arrived `timeout` seconds after the request began: a trickle does not reset it."""

    def __init__(self, app: ASGIApp, max_size: int, timeout: float) -> None:
        self.app = app
        self.max_size = max_size
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_size:
            await _send_error(send, RequestEntityTooLarge())
            return
        deadline = anyio.current_time() + self.timeout
        received = 0
        done = False

        async def bounded_receive() -> Message:
            nonlocal received, done
            if done:  # after the body only a disconnect comes: no deadline for that wait
                return await receive()
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                raise RequestTimeout(self.timeout)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_size:
                    raise RequestEntityTooLarge()
                done = not message.get("more_body", False)
            else:
                done = True
            return message

        await self.app(scope, bounded_receive, send)


async def _send_error(send: Send, err: NeutronError) -> None:
    body = orjson.dumps(err.body())
    await send(
        {
            "type": "http.response.start",
            "status": err.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """400 when parsed JSON nests deeper than `limit` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            raise BadRequest(f"Malformed request body: JSON nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children)
