"""Finance may request background exports and download them; everything else stays as accounts 0002 set it."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

EXTRA = {
    "finance": ["reports.view_exportjob", "reports.add_exportjob"],
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
        ("reports", "0001_initial"),
        ("accounts", "0002_staff_groups"),
    ]
    operations = [migrations.RunPython(grant, revoke)]
