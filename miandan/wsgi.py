import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "miandan.settings")
application = get_wsgi_application()

from miandan.api.parsers import max_body_bytes  # noqa: E402  (needs the apps loaded by the line above)
from miandan.api.stack import ApiCallsFirst  # noqa: E402
from miandan.checks import refuse_to_start  # noqa: E402
from miandan.chunked import ChunkedBodies  # noqa: E402

application = ChunkedBodies(ApiCallsFirst(application), max_body_bytes)

refuse_to_start()
