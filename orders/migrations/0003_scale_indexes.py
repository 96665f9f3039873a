"""Indexes for the seed's scale (issue 14): admin filters and searches, the sweeper, the expiry batch, the
dashboard's counts (index-only), the date hierarchy. Single-column FK indexes that a composite index already
leads with are dropped (each index costs every insert on the hot path).

Built CONCURRENTLY on PostgreSQL (no write lock on a live table), hence not atomic."""

import django.db.models.deletion
from django.db import migrations, models

from miandan.migration_ops import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('orders', '0002_store_minute'),
    ]

    operations = [
        migrations.AlterField(
            model_name='order',
            name='campaign',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='orders', to='campaign.campaign', verbose_name='活动'),
        ),
        migrations.AlterField(
            model_name='order',
            name='state_changed_at',
            field=models.DateTimeField(auto_now_add=True, verbose_name='状态更新时间'),
        ),
        AddIndexOnline(
            model_name='order',
            index=models.Index(fields=['campaign', 'status', 'store'], name='order_campaign_state'),
        ),
        AddIndexOnline(
            model_name='order',
            index=models.Index(condition=models.Q(('status__in', ['placed', 'sent_to_store'])), fields=['created_at'], name='order_unaccepted_age'),
        ),
        AddIndexOnline(
            model_name='order',
            index=models.Index(condition=models.Q(('merchant_ref', ''), _negated=True), fields=['merchant_ref'], name='order_merchant_ref'),
        ),
    ]
