"""The JSON parser every API view uses: bounded size, bounded nesting, clean errors.

DRF reads the request stream itself, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE (64 KiB here) is not
applied to JSON bodies; this parser applies it (also to chunked bodies without Content-Length).
"""

from __future__ import annotations

import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from .errors import DomainError


class PayloadTooLarge(DomainError):
    code = "payload_too_large"
    detail = "请求体太大"
    status = 413


def max_body_bytes() -> int:
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 64 * 1024


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = max_body_bytes()
        request = (parser_context or {}).get("request")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except (TypeError, ValueError):
            declared = 0
        if declared > limit:
            raise PayloadTooLarge(extra={"max_bytes": limit})
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(extra={"max_bytes": limit})
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = raw.decode(encoding)
            return json.loads(text, parse_constant=_reject)  # NaN / Infinity are not JSON
        except (ValueError, RecursionError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {type(exc).__name__}") from exc


def _reject(value: str):
    raise ValueError(f"{value} is not valid JSON")
