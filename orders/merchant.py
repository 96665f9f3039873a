"""Merchant adapters: how an order reaches a store's POS. One simulated merchant ships with the project.

Every call may be repeated (a redelivered task), so adapters take the order id as their
idempotency key: a real POS integration must treat a second `submit` of one order as the same order.
"""

from __future__ import annotations

import random
import time

from django.conf import settings
from django.utils.module_loading import import_string


class MerchantError(Exception):
    pass


class MerchantRejected(MerchantError):
    """The store said no (sold out, closed, too busy): a final answer, the order fails."""


class MerchantTimeout(MerchantError):
    """No answer in time: worth retrying."""


class MerchantAdapter:
    def submit(self, order) -> str:
        """Send the order to the store; returns the store's reference."""
        raise NotImplementedError

    def await_acceptance(self, order) -> None:
        """Returns when the store accepted; raises MerchantRejected when it refused."""
        raise NotImplementedError

    def dispatch(self, order) -> None:
        """The drink left the store."""
        raise NotImplementedError

    def deliver(self, order) -> None:
        """The drink reached the customer."""
        raise NotImplementedError


_RNG: random.Random | None = None


def _process_rng() -> random.Random:
    """One generator per process, seeded by MIANDAN_MERCHANT_SEED when set, so a test run is repeatable."""
    global _RNG
    if _RNG is None:
        seed = settings.MIANDAN_MERCHANT_SEED
        _RNG = random.Random(int(seed)) if seed not in (None, "") else random.Random()
    return _RNG


class SimulatedMerchant(MerchantAdapter):
    """Latency, failure and timeout rates from settings MIANDAN_MERCHANT_* (read on every call)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or _process_rng()

    def _step(self, *, can_reject: bool) -> None:
        latency = max(0, settings.MIANDAN_MERCHANT_LATENCY_MS) / 1000
        if latency:
            time.sleep(latency * self.rng.uniform(0.5, 1.5))
        roll = self.rng.random()
        timeout_rate = settings.MIANDAN_MERCHANT_TIMEOUT_RATE
        if roll < timeout_rate:
            raise MerchantTimeout("门店系统无响应（模拟）")
        if can_reject and roll < timeout_rate + settings.MIANDAN_MERCHANT_FAILURE_RATE:
            raise MerchantRejected("门店拒单（模拟）")

    def submit(self, order) -> str:
        self._step(can_reject=True)
        return f"SIM-{order.pk}"

    def await_acceptance(self, order) -> None:
        self._step(can_reject=True)

    def dispatch(self, order) -> None:
        self._step(can_reject=False)

    def deliver(self, order) -> None:
        self._step(can_reject=False)


def get_merchant(store=None) -> MerchantAdapter:
    path = settings.MIANDAN_MERCHANT_ADAPTER
    return import_string(path)()
