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


def get_backend():
    name = settings.MIANDAN_SMS_BACKEND
    cls = BACKENDS.get(name) or import_string(name)
    return cls()
