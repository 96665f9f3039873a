import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "miandan.settings")
application = get_wsgi_application()

from miandan.checks import refuse_to_start  # noqa: E402  (needs the apps loaded by the line above)

refuse_to_start()
