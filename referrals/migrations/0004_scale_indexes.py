"""Indexes for the seed's scale (issue 14): admin filters and searches, the sweeper, the date hierarchy.

Built CONCURRENTLY on PostgreSQL (no write lock on a live table), hence not atomic."""

from django.db import migrations, models

from miandan.migration_ops import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('referrals', '0003_referral_ip_recent_index'),
    ]

    operations = [
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
