import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "miandan.settings")

app = Celery("miandan")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _refuse_bad_settings(**kwargs) -> None:
    """Workers refuse to start on a setting the project's checks call an error, as gunicorn does (miandan/wsgi.py)."""
    from miandan.checks import refuse_to_start

    refuse_to_start()
