"""Admin login throttling: django-axes in front of the model backend.

Staff log in to /admin/ with a password; after AXES_FAILURE_LIMIT wrong tries for one username from one client
address, that pair is locked for AXES_COOLOFF_MINUTES (HTTP 429, a warning line from the `axes` logger).
Support unlocks in admin ("Access attempts": delete the row) or with `manage.py axes_reset_username <name>`.

App users never go through here: the API logs in by one-time code (accounts.services) with its own limits.
"""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class AdminLoginThrottleBackend(AxesStandaloneBackend):
    """Axes for every HTTP login; `authenticate()` without a request (scripts, management commands, tests'
    `Client.login`) has no client to key a lockout on and is left to the next backend, as without axes."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def log_lockout(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    """One plain line per lockout for the operators (axes' own lines mask the username and address)."""
    import logging

    logging.getLogger("miandan.security").warning(
        "admin login locked out: username=%s ip=%s (unlock: admin > Access attempts, or "
        "manage.py axes_reset_username %s)", username, ip_address, username)
