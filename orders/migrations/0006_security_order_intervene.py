"""orders.can_intervene (cancel / re-send orders from admin) for the support group (superusers hold every
permission). Issue 16: intervention is a permission of its own, not the generic change_order. Support also
sees the per-device claim counts (bot-farm clusters)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

EXTRA = {
    "support": ["orders.can_intervene", "vouchers.view_deviceclaim"],
}


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in EXTRA.items():
        group, _ = Group.objects.get_or_create(name=name)
        for dotted in codes:
            app_label, codename = dotted.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in EXTRA.items():
        group = Group.objects.filter(name=name).first()
        if group is None:
            continue
        for dotted in codes:
            app_label, codename = dotted.split(".")
            group.permissions.remove(*Permission.objects.filter(content_type__app_label=app_label, codename=codename))


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0005_controls_store_caps"),
        ("accounts", "0002_staff_groups"),
        ("vouchers", "0004_security_device_claim"),
    ]
    operations = [
        migrations.AlterModelOptions(
            name="order",
            options={"ordering": ["-id"], "permissions": [("can_intervene", "可以干预订单（取消、重发）")],
                     "verbose_name": "订单", "verbose_name_plural": "订单"},
        ),
        migrations.RunPython(grant, revoke),
    ]
