"""Reconcile's per-card proof at millions of cards (issue 14): the ledger's card index carries kind, amount and
campaign, so the proof reads the index alone, in card order. Built CONCURRENTLY before the old single-column
index is dropped (a card's rows are never without an index), hence not atomic."""

from django.db import migrations, models

from miandan.migration_ops import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('campaign', '0003_scale_indexes'),
    ]

    operations = [
        AddIndexOnline(
            model_name='ledgerentry',
            index=models.Index(fields=['voucher_id', 'kind', 'amount', 'campaign'], name='ledger_card_rows'),
        ),
        migrations.AlterField(
            model_name='ledgerentry',
            name='voucher_id',
            field=models.BigIntegerField(blank=True, null=True, verbose_name='卡 ID'),
        ),
    ]
