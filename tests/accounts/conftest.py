import pytest

from tests.vouchers.conftest import guard_off  # noqa: F401


@pytest.fixture
def own_lookups(monkeypatch) -> list[str]:
    """The token hashes `authenticate` read from Redis in a round trip of its own (accounts.auth._cache_get)."""
    from accounts import auth

    calls: list[str] = []
    real = auth._cache_get

    def counting(key_hash):
        calls.append(key_hash)
        return real(key_hash)

    monkeypatch.setattr(auth, "_cache_get", counting)
    return calls
