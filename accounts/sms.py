"""Pluggable SMS backends. Chosen by MIANDAN_SMS_BACKEND: console (default), fixed, or a dotted path."""

from __future__ import annotations

import logging
import secrets

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger("miandan.sms")


class ConsoleBackend:
    """Development: the code goes to the log instead of a phone."""

    def generate_code(self) -> str:
        return f"{secrets.randbelow(1_000_000):06d}"

    def send(self, phone: str, code: str) -> None:
        logger.info("【免单】验证码 %s，5 分钟内有效。", code, extra={"phone": phone})


class FixedBackend(ConsoleBackend):
    """Load tests: every code is MIANDAN_FIXED_OTP. `check --deploy` warns while it is set."""

    def generate_code(self) -> str:
        code = settings.MIANDAN_FIXED_OTP or ""
        if len(code) != 6 or not code.isdigit():
            raise RuntimeError("MIANDAN_SMS_BACKEND=fixed needs MIANDAN_FIXED_OTP=<6 digits>")
        return code

    def send(self, phone: str, code: str) -> None:
        logger.debug("fixed OTP backend: not sending", extra={"phone": phone})


BACKENDS = {"console": ConsoleBackend, "fixed": FixedBackend}


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
