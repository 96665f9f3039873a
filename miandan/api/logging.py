"""One JSON object per log line, so log shippers need no parsing rules."""

import datetime as dt
import json
import logging

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        request = payload.pop("request", None)
        if request is not None and hasattr(request, "path"):
            # django.request passes the HttpRequest: keep what helps, never headers or bodies.
            payload["method"] = getattr(request, "method", None)
            payload["path"] = request.path
        # (django.server passes its socket as `request`; the access line already names the path.)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)
