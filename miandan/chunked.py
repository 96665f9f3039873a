"""Request bodies sent with `Transfer-Encoding: chunked` (no Content-Length), as phone HTTP stacks stream them.

gunicorn decodes the chunks and marks the input as terminated (`wsgi.input_terminated`), but Django and DRF read
a body only up to CONTENT_LENGTH: without one they see an empty body, and a valid request was answered 400
"该字段是必填项" (found by an outside review). This WSGI wrapper reads such a body (at most the upload limit plus
one byte, so the JSON parser still answers 413 `payload_too_large` for a larger one) and hands it on with its
length, as if the client had sent Content-Length.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict, Callable[..., Any]], Iterable[bytes]]


class ChunkedBodies:
    def __init__(self, app: WSGIApp, max_bytes: Callable[[], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
            body = environ["wsgi.input"].read(self.max_bytes() + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)
