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
        ('referrals', '0003_referral_ip_recent_index'),
    ]

    operations = [
        migrations.AlterField(
            model_name='referral',
            name='campaign',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='referrals', to='campaign.campaign', verbose_name='活动'),
        ),
        AddIndexOnline(
            model_name='referral',
            index=models.Index(fields=['campaign', 'status', 'inviter_outcome', 'invitee_outcome'], name='referral_campaign_funnel'),
        ),
        AddIndexOnline(
            model_name='referral',
            index=models.Index(condition=models.Q(('status', 'accepted'), _negated=True), fields=['status', 'id'], name='referral_not_accepted'),
        ),
        AddIndexOnline(
            model_name='referral',
            index=models.Index(condition=models.Q(('inviter_outcome', 'issued'), _negated=True), fields=['inviter_outcome', 'id'], name='referral_inviter_unpaid'),
        ),
        AddIndexOnline(
            model_name='referral',
            index=models.Index(condition=models.Q(('invitee_outcome', 'issued'), _negated=True), fields=['invitee_outcome', 'id'], name='referral_invitee_unpaid'),
        ),
    ]
