"""Deploy checks for the login side (`manage.py check --deploy`)."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def fixed_otp_backend(app_configs, **kwargs):
    """The fixed SMS backend lets anyone log in as any phone: fine for a load test, fatal in production."""
    if settings.MIANDAN_SMS_BACKEND != "fixed":
        return []
    return [
        Warning(
            "MIANDAN_SMS_BACKEND=fixed：所有验证码都是同一个固定值，任何人都能登录任意手机号。",
            hint="Only for load tests. Unset MIANDAN_SMS_BACKEND (or set a real SMS backend) in production.",
            id="miandan.W001",
        )
    ]


@register(Tags.security, deploy=True)
def sms_backend_in_production(app_configs, **kwargs):
    """console logs codes, fixed accepts one code for every phone: neither may serve real users.

    A load test (MIANDAN_LOAD_TEST=1) is the one non-debug run allowed to use them.
    """
    from django.core.checks import Error

    if settings.DEBUG or settings.MIANDAN_LOAD_TEST:
        return []
    from miandan.checks import dev_sms_backend_error

    errors = []
    if (dev_sms := dev_sms_backend_error()) is not None:
        errors.append(dev_sms)
    elif settings.MIANDAN_SMS_BACKEND == "http" and not settings.MIANDAN_SMS_HTTP_URL:
        errors.append(Error("MIANDAN_SMS_BACKEND=http needs MIANDAN_SMS_HTTP_URL", id="miandan.E010"))
    if settings.MIANDAN_FIXED_OTP:
        errors.append(Error("MIANDAN_FIXED_OTP is set while DJANGO_DEBUG=0", hint="Unset it in production.",
                            id="miandan.E010"))
    return errors
