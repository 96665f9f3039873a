import pytest

from orders import parser
from orders.catalog import HANGZHOU_CENTER, catalog_load

LAT, LNG = HANGZHOU_CENTER


@pytest.fixture
def catalogue(db):
    """Brands, menus and the six round-the-clock stores near the check point (no random stores)."""
    catalog_load(stores_per_city=0)
    parser.catalogue_changed()
    yield
    parser.catalogue_changed()


from tests.celery_worker import celery_worker  # noqa: E402,F401  (fixture)
