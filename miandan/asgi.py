import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "miandan.settings")
application = get_asgi_application()

from miandan.checks import refuse_to_start  # noqa: E402  (needs the apps loaded by the line above)

refuse_to_start()
