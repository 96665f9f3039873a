"""Pluggable SMS backends. Chosen by MIANDAN_SMS_BACKEND: console (default), fixed, http, or a dotted path.

A code reaches a log line only with DJANGO_DEBUG=1 (console backend in development); `check --deploy`
refuses console/fixed with DEBUG off (miandan.E010, accounts/checks.py).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import urllib.error
import urllib.request

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger("miandan.sms")


class ConsoleBackend:
    """Development: the code goes to the log instead of a phone."""

    def generate_code(self) -> str:
        return f"{secrets.randbelow(1_000_000):06d}"

    def send(self, phone: str, code: str) -> None:
        if settings.DEBUG:
            logger.info(sms_text(code), extra={"phone": phone})
        else:  # a code in a log is a login for whoever reads the logs
            logger.info("console SMS backend: code withheld (DJANGO_DEBUG=0)", extra={"phone": phone})


class FixedBackend(ConsoleBackend):
    """Load tests: every code is MIANDAN_FIXED_OTP. `check --deploy` warns while it is set."""

    def generate_code(self) -> str:
        code = settings.MIANDAN_FIXED_OTP or ""
        if len(code) != 6 or not code.isdigit():
            raise RuntimeError("MIANDAN_SMS_BACKEND=fixed needs MIANDAN_FIXED_OTP=<6 digits>")
        return code

    def send(self, phone: str, code: str) -> None:
        logger.debug("fixed OTP backend: not sending", extra={"phone": phone})


def sms_text(code: str) -> str:
    return f"【免单】验证码 {code}，5 分钟内有效。"


class SmsSendFailed(RuntimeError):
    pass


class HttpBackend(ConsoleBackend):
    """A provider's HTTP API: POST {"phone", "text"} as JSON to MIANDAN_SMS_HTTP_URL (Bearer MIANDAN_SMS_HTTP_TOKEN).

    Each try waits at most MIANDAN_SMS_HTTP_TIMEOUT seconds; connection errors, timeouts and 5xx/429 answers are
    retried MIANDAN_SMS_HTTP_RETRIES times with a short backoff, 4xx are not (the request itself is wrong).
    The code never appears in a log line or an exception message.
    """

    def send(self, phone: str, code: str) -> None:
        url = settings.MIANDAN_SMS_HTTP_URL
        if not url:
            raise SmsSendFailed("MIANDAN_SMS_HTTP_URL is not set")
        body = json.dumps({"phone": phone, "text": sms_text(code)}, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if settings.MIANDAN_SMS_HTTP_TOKEN:
            headers["Authorization"] = f"Bearer {settings.MIANDAN_SMS_HTTP_TOKEN}"
        attempts = max(0, settings.MIANDAN_SMS_HTTP_RETRIES) + 1
        last = ""
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=settings.MIANDAN_SMS_HTTP_TIMEOUT) as response:
                    response.read(1024)
                logger.info("sms sent", extra={"phone": phone, "attempt": attempt})
                return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                last = type(exc).__name__
            logger.warning("sms send failed (%s), attempt %d/%d", last, attempt, attempts, extra={"phone": phone})
            if attempt < attempts:
                time.sleep(min(0.2 * 2 ** (attempt - 1), 1.0))
        logger.error("sms not sent: %s", last, extra={"phone": phone})
        raise SmsSendFailed(f"SMS provider failed: {last}")


BACKENDS = {"console": ConsoleBackend, "fixed": FixedBackend, "http": HttpBackend}


def code_shown_to_client() -> bool:
    """The demo's shortcut: the OTP answer carries the code (`debug_code`) so a newcomer can log in.

    Only with DEBUG on *and* the console backend (the code would otherwise only be in the server log);
    never with DEBUG off, never with a real SMS backend, never with the fixed (load test) one.
    """
    return bool(settings.DEBUG) and settings.MIANDAN_SMS_BACKEND == "console"


def get_backend():
    name = settings.MIANDAN_SMS_BACKEND
    cls = BACKENDS.get(name) or import_string(name)
    return cls()
