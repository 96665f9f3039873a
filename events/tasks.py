"""Celery task for the event stream: thin, one service call (architecture.md, convention 7)."""

from miandan.tasks import task

from . import services


@task(name="events.deliver", max_retries=0, soft_time_limit=50, time_limit=60)
def events_deliver_task() -> dict:
    # Bounded below the soft limit; whatever is left is picked up by the next beat (5 s).
    return services.events_deliver(seconds=35.0)
