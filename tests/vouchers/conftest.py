import pytest

RATES_OFF = {name: "off" for name in (
    "otp_phone", "otp_ip", "login_phone", "login_ip", "join_user", "join_ip", "referral_user", "referral_ip",
    "order_user", "order_ip",
)}


@pytest.fixture
def guard_off(settings):
    """The flash-crowd guard (rate limits, shedding) is tested on its own; these tests exercise the engine."""
    settings.MIANDAN_SHED_ENABLED = False
    settings.RATELIMIT_ENABLE = False
    settings.MIANDAN_RATELIMITS = dict(RATES_OFF)
    return settings
