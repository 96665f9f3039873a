"""Staff groups and what each may do. Re-run safely: permissions are set, not appended."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUPS = {
    "marketing": [
        "campaign.view_campaign", "campaign.add_campaign", "campaign.change_campaign",
        "campaign.toggle_switches", "campaign.change_budget",
        "campaign.view_budgetbucket", "campaign.view_ledgerentry", "campaign.view_auditlog",
        "vouchers.view_voucher",
        "referrals.view_invitecode", "referrals.view_referral", "referrals.change_referral",
        "referrals.review_referral",
        "orders.view_brand", "orders.change_brand", "orders.add_brand",
        "orders.view_store", "orders.change_store", "orders.add_store",
        "orders.view_product", "orders.change_product", "orders.add_product",
        "orders.view_order",
    ],
    "finance": [
        "campaign.view_campaign", "campaign.view_budgetbucket", "campaign.view_ledgerentry",
        "campaign.view_auditlog", "campaign.view_budget_report",
        "vouchers.view_voucher",
        "referrals.view_referral",
        "orders.view_order", "orders.view_orderitem", "orders.view_orderevent",
        "orders.view_store", "orders.view_brand",
    ],
    "support": [
        "accounts.view_user", "accounts.view_device",
        "campaign.view_campaign",
        "vouchers.view_voucher", "vouchers.void_voucher",
        "referrals.view_referral",
        "orders.view_order", "orders.view_orderitem", "orders.view_orderevent", "orders.view_store",
    ],
}


def create_groups(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codes in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = []
        for dotted in codes:
            app_label, codename = dotted.split(".")
            perms.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        group.permissions.set(perms)


def drop_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("campaign", "0001_initial"),
        ("vouchers", "0001_initial"),
        ("referrals", "0001_initial"),
        ("orders", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]
    operations = [migrations.RunPython(create_groups, drop_groups)]
