"""System checks of the project's own settings.

`manage.py` commands run them (check, migrate, runserver ...); the WSGI/ASGI entry points and the
Celery app run the ones tagged "miandan" at start-up too (`refuse_to_start`), so gunicorn and
workers never serve with a setting the checks call an error.
"""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

from miandan.options import DEFAULT_RATES, DISABLED, RATE_PATTERN

TAG = "miandan"


def refuse_to_start() -> None:
    """Raise ImproperlyConfigured when a check tagged "miandan" reports an error (cheap: no URL or model checks),
    or when this process would serve real users with a development-only setting (`unsafe_to_serve`)."""
    errors = [m for m in checks.run_checks(tags=[TAG]) if m.is_serious()] + unsafe_to_serve()
    if errors:
        raise ImproperlyConfigured("; ".join(f"{e.id}: {e.msg}" for e in errors))


def unsafe_to_serve() -> list[Error]:
    """What gunicorn and the Celery workers refuse to start with when DJANGO_DEBUG=0 (`check --deploy` reports the
    same as miandan.E010 / E011): an SMS backend that logs codes (console) or accepts one code for every phone
    (fixed), and the demo's SECRET_KEY, which signs sessions, OTP hashes and merchant callbacks.

    Not a registered check: every `manage.py` command (migrate, seed_demo, ...) runs those, and an operator must
    be able to migrate before the SMS provider is configured. A load test or an acceptance check sets
    MIANDAN_LOAD_TEST=1 (docs/api.md), the one non-debug run allowed to use them.
    """
    if settings.DEBUG or settings.MIANDAN_LOAD_TEST:
        return []
    return [e for e in (dev_sms_backend_error(), fallback_key_error()) if e is not None]


def dev_sms_backend_error() -> Error | None:
    """miandan.E010 for a development SMS backend (console logs codes, fixed accepts one code for every phone)
    with DJANGO_DEBUG=0; shared by `check --deploy` (accounts/checks.py) and `unsafe_to_serve`."""
    if settings.DEBUG or settings.MIANDAN_SMS_BACKEND not in ("console", "fixed"):
        return None
    return Error(
        f"MIANDAN_SMS_BACKEND={settings.MIANDAN_SMS_BACKEND} while DJANGO_DEBUG=0",
        hint="Set MIANDAN_SMS_BACKEND=http (with MIANDAN_SMS_HTTP_URL) or a dotted path to a real backend; "
             "MIANDAN_LOAD_TEST=1 only for load tests.",
        id="miandan.E010",
    )


def fallback_key_error() -> Error | None:
    """miandan.E011: with DEBUG off the demo's SECRET_KEY signs sessions, OTP hashes and merchant callbacks, so
    anyone can forge them; shared by `check --deploy` and `unsafe_to_serve`."""
    if settings.DEBUG or not settings.SECRET_KEY.startswith(INSECURE_KEY_PREFIX):
        return None
    return Error(
        "SECRET_KEY is the demo fallback while DJANGO_DEBUG=0",
        hint="Set SECRET_KEY to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(64))').",
        id="miandan.E011",
    )


@register(TAG)
def ratelimit_overrides(app_configs, **kwargs):
    """MIANDAN_RATELIMITS must name known limits with rates django-ratelimit understands."""
    errors = []
    for name, value in settings.MIANDAN_RATELIMITS.items():
        if name not in DEFAULT_RATES:
            errors.append(Error(
                f"MIANDAN_RATELIMITS: unknown limit {name!r}",
                hint=f"Known names: {', '.join(sorted(DEFAULT_RATES))}.", id="miandan.E001",
            ))
        elif value.strip() not in DISABLED and not RATE_PATTERN.match(value.strip()):
            errors.append(Error(
                f"MIANDAN_RATELIMITS: {name}={value!r} is not a rate",
                hint="Use a rate like 10/m, 5/10m or 100/h, or off to disable that limit.", id="miandan.E001",
            ))
    return errors


# The demo's fallback (settings.py); anything starting with this prefix is a key from the source tree.
INSECURE_KEY_PREFIX = "django-insecure-"


@register(checks.Tags.security, deploy=True)
def secret_key_fallback(app_configs, **kwargs):
    """`check --deploy`: the demo SECRET_KEY with DEBUG off (fallback_key_error)."""
    return [e for e in (fallback_key_error(),) if e is not None]


@register(checks.Tags.security, deploy=True)
def metrics_exposed(app_configs, **kwargs):
    """/metrics lists internals (queue depths, budgets); with DEBUG off it needs a token or a private allow-list."""
    import ipaddress

    errors = []
    for net in settings.MIANDAN_METRICS_ALLOWED_NETS:
        try:
            parsed = ipaddress.ip_network(net, strict=False)
        except ValueError:
            errors.append(Error(f"MIANDAN_METRICS_ALLOWED_NETS: {net!r} is not a network", id="miandan.E012"))
            continue
        if not settings.DEBUG and parsed.prefixlen == 0:
            errors.append(Error(f"MIANDAN_METRICS_ALLOWED_NETS opens /metrics to everyone ({net})",
                                hint="List the scraper's networks or set MIANDAN_METRICS_TOKEN.", id="miandan.E012"))
    return errors
