from miandan.tasks import task

from . import services


# Exports of millions of rows take minutes: lift the default 45/60 s limits for this one task.
@task(name="reports.export_job_run", soft_time_limit=1800, time_limit=1900, max_retries=2)
def export_job_run_task(job_id: int) -> None:
    services.export_job_run(job_id=job_id)


@task(name="reports.ledger_rollup", soft_time_limit=600, time_limit=660)
def ledger_rollup_task() -> None:
    """Keep every live campaign's ledger rollup close to the present (the dashboard reads it)."""
    from campaign.models import Campaign

    for campaign in Campaign.objects.exclude(status=Campaign.Status.DRAFT):
        services.ledger_rollup_advance(campaign=campaign)


@task(name="reports.pace_check", soft_time_limit=60, time_limit=90)
def pace_check_task() -> None:
    """Spend ahead of plan: log + metric (reports.services.pace_check)."""
    services.pace_check()


@task(name="reports.export_cleanup")
def export_cleanup_task() -> None:
    """Export files live MIANDAN_EXPORT_RETENTION_HOURS, then go (hourly, from beat)."""
    services.export_cleanup()
