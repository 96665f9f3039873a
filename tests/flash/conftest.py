import pytest

from tests.servers import OwnRedis


@pytest.fixture
def own_redis():
    server = OwnRedis()
    server.start()
    yield server
    server.stop()


from tests.celery_worker import celery_worker  # noqa: E402,F401  (fixture: a real prefork worker)
