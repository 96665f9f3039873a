"""Indexes for the seed's scale (issue 14): admin filters and searches, the sweeper, the date hierarchy.

Built CONCURRENTLY on PostgreSQL (no write lock on a live table), hence not atomic."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from miandan.migration_ops import AddIndexOnline, RemoveIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('campaign', '0002_ledger_append_only'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        RemoveIndexOnline(
            model_name='ledgerentry',
            name='ledger_campaign_kind',
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='actor',
            field=models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL, verbose_name='操作人'),
        ),
        AddIndexOnline(
            model_name='ledgerentry',
            index=models.Index(fields=['kind', '-id'], name='ledger_kind_recent'),
        ),
        AddIndexOnline(
            model_name='ledgerentry',
            index=models.Index(condition=models.Q(('actor__isnull', False)), fields=['actor'], name='ledger_staff_rows'),
        ),
    ]
