"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, for every failure."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import RelaykitError

log = logging.getLogger("relaykit.serve")

FORMS = {"prompt": "a non-empty string, a list of them, token ids (integers >= 0) or a list of token-id lists"}


class APIError(Exception):
    """An error answered with `status` and OpenAI's error body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, self.status, headers=self.headers)


def validation_error(error: RequestValidationError) -> APIError:
    """A 400 naming the first offending field (an unsupported field by name)."""
    first = error.errors()[0]
    location = [part for part in first.get("loc", ()) if part != "body"]
    param = str(location[0]) if location else None
    if first.get("type") == "extra_forbidden":
        param = ".".join(str(part) for part in location)
        return APIError(400, f"unsupported field {param!r}: relaykit does not honour it", param=param,
                        code="unsupported_parameter")
    if param is None:
        return APIError(400, f"the request body must be a JSON object sent with Content-Type: application/json "
                        f"({first.get('msg', 'invalid')})", code="invalid_json")
    if param in FORMS:  # a union: each of its forms reports an error; name the forms instead
        return APIError(400, f"{param}: expected {FORMS[param]}", param=param, code="invalid_value")
    return APIError(400, f"{param}: {first.get('msg', 'invalid value')}", param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, error: APIError):
        return error.response()

    async def on_validation(request: Request, error: RequestValidationError):
        return validation_error(error).response()

    async def on_relaykit(request: Request, error: RelaykitError):
        return APIError(400, str(error)).response()

    async def on_http(request: Request, error: HTTPException):
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return APIError(error.status_code, str(error.detail), kind, headers=getattr(error, "headers", None)).response()

    async def on_unexpected(request: Request, error: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return APIError(500, f"internal error: {type(error).__name__}: {error}", "server_error").response()

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(RelaykitError, on_relaykit)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets a 413: at once when its Content-Length
    says so, else (a chunked body) as soon as that many bytes have arrived; such a body is read here
    and handed on whole."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = APIError(413, f"the request body is over {self.max_bytes} bytes", code="request_too_large")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await too_large.response()(scope, receive, send)
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await too_large.response()(scope, receive, send)
        body, handed = b"".join(chunks), False

        async def replay():
            nonlocal handed
            if handed:
                return await receive()  # e.g. a disconnect while a response streams
            handed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
