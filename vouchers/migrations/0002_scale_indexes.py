"""Indexes for the seed's scale (issue 14): the expiry batch, the admin's source filter and date hierarchy, the
dashboard's and report's counts (index-only). The single-column campaign and user indexes go: (campaign, user,
slot) and (user, campaign, status) lead with them, and each index costs every card insert on the join path.

Built CONCURRENTLY on PostgreSQL (no write lock on a live table), hence not atomic."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from miandan.migration_ops import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('vouchers', '0001_initial'),
        ('campaign', '0002_ledger_append_only'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='voucher',
            name='campaign',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='vouchers', to='campaign.campaign', verbose_name='活动'),
        ),
        migrations.AlterField(
            model_name='voucher',
            name='user',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='vouchers', to=settings.AUTH_USER_MODEL, verbose_name='持有人'),
        ),
        AddIndexOnline(
            model_name='voucher',
            index=models.Index(condition=models.Q(('status', 'issued')), fields=['expires_at', 'id'], name='voucher_issued_expiry'),
        ),
        AddIndexOnline(
            model_name='voucher',
            index=models.Index(fields=['campaign', 'status', 'source'], name='voucher_campaign_state'),
        ),
        AddIndexOnline(
            model_name='voucher',
            index=models.Index(fields=['issued_at'], name='voucher_issued_at'),
        ),
        AddIndexOnline(
            model_name='voucher',
            index=models.Index(fields=['source', 'expires_at'], name='voucher_source_expiry'),
        ),
    ]
