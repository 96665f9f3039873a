import pytest

from tests.vouchers.conftest import guard_off  # noqa: F401


@pytest.fixture
def catalogue(db):
    """Brands, menus and the six round-the-clock stores (as tests/orders/conftest.py, without its worker fixtures)."""
    from demo.catalog import catalog_load
    from orders import parser

    catalog_load(stores_per_city=0)
    parser.catalogue_changed()
    yield
    parser.catalogue_changed()
