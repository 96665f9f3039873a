import pytest

from demo.catalog import HANGZHOU_CENTER, catalog_load
from orders import parser

LAT, LNG = HANGZHOU_CENTER


@pytest.fixture
def catalogue(db):
    """Brands, menus and the six round-the-clock stores near the check point (no random stores)."""
    catalog_load(stores_per_city=0)
    parser.catalogue_changed()
    yield
    parser.catalogue_changed()


from tests.celery_worker import celery_worker  # noqa: E402,F401  (fixture)


@pytest.fixture(scope="session", autouse=True)
def _purge_order_queue_at_end():
    """Transactional tests without a worker still send tasks on commit; leave no messages behind."""
    yield
    from django.conf import settings

    from tests.celery_worker import _purge

    if settings.CELERY_BROKER_URL:
        _purge(settings.CELERY_TASK_DEFAULT_QUEUE)
