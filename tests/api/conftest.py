from tests.vouchers.conftest import guard_off  # noqa: F401
