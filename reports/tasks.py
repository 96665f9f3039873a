from miandan.tasks import task

from . import services


# Exports of millions of rows take minutes: lift the default 45/60 s limits for this one task.
@task(name="reports.export_job_run", soft_time_limit=1800, time_limit=1900, max_retries=2)
def export_job_run_task(job_id: int) -> None:
    services.export_job_run(job_id=job_id)
