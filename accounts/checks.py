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
