"""Redis in front of the voucher engine: reject the hopeless before PostgreSQL sees them.

Redis never decides a success. It only remembers facts that cannot become false:
a user's card count only grows (slots are never freed) and a welcome card, once issued,
stays that user's. A lost key is rebuilt from PostgreSQL on the next request; any Redis
error is treated as "don't know" and the database decides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from miandan.redis import ERRORS as REDIS_ERRORS
from miandan.redis import get_redis, key

logger = logging.getLogger(__name__)
USER_TTL = 600
EXHAUSTED_TTL = 2  # seconds; released budget becomes claimable again at the latest this much later


@dataclass(frozen=True)
class UserState:
    count: int
    welcome_code: str


def _user_key(campaign_id: int, user_id: int) -> str:
    return key(f"{{c{campaign_id}}}", "u", user_id)


def _exhausted_key(campaign_id: int) -> str:
    return key(f"{{c{campaign_id}}}", "exhausted")


def user_state(campaign_id: int, user_id: int) -> UserState | None:
    client = get_redis()
    if client is None:
        return None
    try:
        data = client.hgetall(_user_key(campaign_id, user_id))
    except REDIS_ERRORS:
        logger.warning("admission: redis unavailable, falling back to the database")
        return None
    return _state(data)


def precheck(campaign_id: int, user_id: int) -> tuple[UserState | None, bool]:
    """The user's remembered state and the "budget known exhausted" flag, in one round trip."""
    client = get_redis()
    if client is None:
        return None, False
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(_user_key(campaign_id, user_id))
        pipe.exists(_exhausted_key(campaign_id))
        data, exhausted = pipe.execute()
    except REDIS_ERRORS:
        logger.warning("admission: redis unavailable, falling back to the database")
        return None, False
    return _state(data), bool(exhausted)


def precheck_commands(pipe, campaign_id: int, user_id: int) -> int:
    """`precheck`'s two reads queued on someone else's pipeline (the guard's rate-limit round trip); returns how
    many commands were added. `precheck_result` reads their replies."""
    pipe.hgetall(_user_key(campaign_id, user_id))
    pipe.exists(_exhausted_key(campaign_id))
    return 2


def precheck_result(replies: list) -> tuple[UserState | None, bool]:
    data, exhausted = replies
    if data and isinstance(next(iter(data)), bytes):  # the rate-limit client does not decode replies
        data = {k.decode(): v.decode() for k, v in data.items()}
    return _state(data or {}), bool(exhausted)


def _state(data: dict) -> UserState | None:
    """Parse a remembered user hash; anything odd counts as "don't know" (the database decides)."""
    if not data:
        return None
    try:
        return UserState(count=int(data.get("n", 0)), welcome_code=str(data.get("w", "")))
    except (TypeError, ValueError):
        return None


def remember_user(campaign_id: int, user_id: int, *, count: int, welcome_code: str) -> None:
    client = get_redis()
    if client is None:
        return
    try:
        k = _user_key(campaign_id, user_id)
        pipe = client.pipeline(transaction=False)
        pipe.hset(k, mapping={"n": count, "w": welcome_code})
        pipe.expire(k, USER_TTL)
        pipe.execute()
    except REDIS_ERRORS:
        pass


def remember_user_if_absent(campaign_id: int, user_id: int, *, count: int, welcome_code: str) -> None:
    """`remember_user` for a read made without the slot lock: never overwrites what a card issue wrote.

    (A stale count read here is only ever too low, which sends the user to the database: harmless.)
    """
    client = get_redis()
    if client is None:
        return
    try:
        k = _user_key(campaign_id, user_id)
        pipe = client.pipeline(transaction=False)
        pipe.hsetnx(k, "n", count)
        pipe.hsetnx(k, "w", welcome_code)
        pipe.expire(k, USER_TTL)
        pipe.execute()
    except REDIS_ERRORS:
        pass


def forget_user(campaign_id: int, user_id: int) -> None:
    client = get_redis()
    if client is None:
        return
    try:
        client.delete(_user_key(campaign_id, user_id))
    except REDIS_ERRORS:
        pass


def budget_known_exhausted(campaign_id: int) -> bool:
    client = get_redis()
    if client is None:
        return False
    try:
        return bool(client.exists(_exhausted_key(campaign_id)))
    except REDIS_ERRORS:
        return False


def mark_exhausted(campaign_id: int) -> None:
    client = get_redis()
    if client is None:
        return
    try:
        client.set(_exhausted_key(campaign_id), 1, ex=EXHAUSTED_TTL)
    except REDIS_ERRORS:
        pass


def clear_exhausted(campaign_id: int) -> None:
    client = get_redis()
    if client is None:
        return
    try:
        client.delete(_exhausted_key(campaign_id))
    except REDIS_ERRORS:
        pass
