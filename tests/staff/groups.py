"""Recreate the staff groups for tests.

The groups come from data migrations (accounts 0002, reports 0002, orders 0006). A `transaction=True` test
flushes the database afterwards, which drops them; tests/conftest.py calls this after every flush (post_migrate),
so every test finds them.
"""

import importlib

from django.contrib.auth.models import Group, Permission


def ensure_staff_groups() -> None:
    base = importlib.import_module("accounts.migrations.0002_staff_groups").GROUPS
    extra = importlib.import_module("reports.migrations.0002_staff_group_permissions").EXTRA
    intervene = importlib.import_module("orders.migrations.0006_security_order_intervene").EXTRA
    for name in base:
        codes = [*base[name], *extra.get(name, []), *intervene.get(name, [])]
        group, _ = Group.objects.get_or_create(name=name)
        perms = [
            Permission.objects.get(content_type__app_label=dotted.split(".")[0], codename=dotted.split(".")[1])
            for dotted in codes
        ]
        group.permissions.set(perms)
