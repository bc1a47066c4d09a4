"""The error every bad request gets: a 4xx (or 5xx) with OpenAI's JSON error body, naming the field."""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error with a JSON body ``{"error": {"message", "type", "param", "code"}}``.

    ``param`` names the request field at fault (None when no one field is: a full queue)."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad_field(param: str, message: str, code: str = "invalid_value") -> ApiError:
    """400 naming ``param``; the message starts with the field's name."""
    text = message if message.startswith(param) else f"{param}: {message}"
    return ApiError(400, text, param=param, code=code)
