"""The error the client raises when the server answers with an error status."""

from __future__ import annotations

import json
from typing import Any, Optional


class ApiError(Exception):
    """The server refused a request.

    Every error answer of the API has the body ``{"error": {"code", "message", "field"}}``;
    its parts are the attributes here.

    Attributes:
        status: the HTTP status (``404``, ``422`` …).
        code: the stable machine-readable code (``not_found``, ``invalid_argument``,
            ``conflict`` …), or ``http_<status>`` when the body was not the API's.
        message: one readable sentence naming what was wrong.
        field: the request field at fault (``key``, ``nodes[2].name``), when there is one.
        method: the request's method.
        path: the request's path.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: Optional[str] = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.method = method
        self.path = path
        where = f" ({field})" if field else ""
        super().__init__(f"{method} {path}: {status} {code}{where}: {message}".strip())

    @classmethod
    def from_body(cls, status: int, body: bytes, method: str = "", path: str = "") -> "ApiError":
        """Builds the error from an error answer's status and body."""
        text = body.decode("utf-8", errors="replace")
        err: Any = None
        try:
            err = json.loads(text).get("error")
        except (ValueError, AttributeError):
            err = None
        if isinstance(err, dict):
            return cls(
                status,
                str(err.get("code") or f"http_{status}"),
                str(err.get("message") or ""),
                err.get("field"),
                method,
                path,
            )
        return cls(status, f"http_{status}", text.strip()[:500], None, method, path)
