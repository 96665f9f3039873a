"""The spend plan: how much of a campaign's budget may be committed (reserved + spent) by each moment.

A plan is either a few points (time, cumulative share "20%" or amount in yuan), linear in between, or
"even per day" (each local day, from Asia/Shanghai midnight, adds total / days). Everything here is pure
Python on the campaign row the hot path already holds: no query. The enforcement itself is SQL in
`campaign.services.budget_reserve_sql`: each bucket may hold at most `allotment * share` committed, so the
campaign as a whole never holds more than `total * share` (the buckets' allotments add up to the total)
and no single row serialises the claims. The price of enforcing per bucket: the plan may be undershot by
less than one card per bucket at any moment (pieces of plan room smaller than a card), never overshot.

Throttle mode draws one random number r per claim and lowers the share to share * (s + r * (1 - s))
(s = `pace_throttle_from`): a bucket filled to u of its plan refuses with probability (u - s) / (1 - s),
0 below s, 1 at the plan. The draw comes from `RNG`, which tests replace with a seeded one.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from django.conf import settings

from .models import Campaign, PaceMode

CENT = Decimal("0.01")
SHARE_QUANTUM = Decimal("0.000000000001")
ENFORCING = (PaceMode.REFUSE, PaceMode.THROTTLE)
RNG: random.Random = random.Random()


def set_rng(rng: random.Random) -> None:
    """Inject the throttle's random source (tests pass a seeded `random.Random`)."""
    global RNG
    RNG = rng


def local_tz() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def local_day(now: dt.datetime) -> dt.date:
    """The Asia/Shanghai calendar day of an instant: the key of every daily counter."""
    return now.astimezone(local_tz()).date()


def next_local_midnight(now: dt.datetime) -> dt.datetime:
    day = local_day(now) + dt.timedelta(days=1)
    return dt.datetime.combine(day, dt.time.min, tzinfo=local_tz())


def seconds_until(moment: dt.datetime | None, now: dt.datetime) -> int:
    """Retry-After in whole seconds (at least 1); with no moment, until the next local midnight."""
    moment = moment or next_local_midnight(now)
    return max(1, int((moment - now).total_seconds() + 0.999))


# --- plan points ---------------------------------------------------------------------------

def parse_value(raw: object, total: Decimal) -> Decimal:
    """"20%" -> 20 % of the total; "1500000" -> that many yuan. Raises ValueError on anything else."""
    text = str(raw).strip().replace("，", ",")
    try:
        if text.endswith("%"):
            share = Decimal(text[:-1].strip())
            if not 0 <= share <= 100:
                raise ValueError(text)
            return (total * share / 100).quantize(CENT, rounding=ROUND_FLOOR)
        amount = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(text) from exc
    if not amount.is_finite() or amount < 0:
        raise ValueError(text)
    return amount.quantize(CENT, rounding=ROUND_FLOOR)


def parse_time(raw: object) -> dt.datetime:
    """ISO time; a naive one is local (Asia/Shanghai), as marketing types it."""
    moment = dt.datetime.fromisoformat(str(raw).strip())
    return moment if moment.tzinfo else moment.replace(tzinfo=local_tz())


def parse_plan_text(text: str) -> list[list[str]]:
    """Admin input, one point a line: "2026-02-01 10:00, 20%" or "2026-02-03 00:00, 1500000".

    Returns the stored form [[iso, value], ...] sorted by time; raises ValueError with a Chinese message.
    """
    points: list[tuple[dt.datetime, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        parts = [p.strip() for p in line.replace("，", ",").split(",")]
        if len(parts) != 2:
            raise ValueError(f"第 {number} 行格式应为“时间, 比例或金额”")
        try:
            moment = parse_time(parts[0])
            parse_value(parts[1], Decimal("100"))
        except ValueError as exc:
            raise ValueError(f"第 {number} 行无法识别：{line}") from exc
        points.append((moment, parts[1]))
    points.sort(key=lambda p: p[0])
    return [[moment.isoformat(), value] for moment, value in points]


def plan_text(points: list) -> str:
    """The stored form back as admin text, local times."""
    lines = []
    for at, value in points or []:
        lines.append(f"{parse_time(at).astimezone(local_tz()).strftime('%Y-%m-%d %H:%M')}, {value}")
    return "\n".join(lines)


def has_plan(campaign: Campaign) -> bool:
    return campaign.pace_mode != PaceMode.NONE and (campaign.pace_even_daily or bool(campaign.pace_points))


def _days(campaign: Campaign) -> tuple[dt.date, int]:
    first = local_day(campaign.starts_at)
    last = local_day(campaign.ends_at - dt.timedelta(microseconds=1))
    return first, (last - first).days + 1


def _breakpoints(campaign: Campaign) -> list[tuple[dt.datetime, Decimal]]:
    """The curve as (time, cumulative amount) corners, starting at (starts_at, 0).

    Parsed once per campaign object: the hot path reuses the per-process cached campaign row for 0.5 s, so a
    claim does not re-parse the stored points.
    """
    key = (repr(campaign.pace_points), campaign.total_budget, campaign.starts_at)
    cached = getattr(campaign, "_pace_corners", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    corners = _parse_breakpoints(campaign)
    campaign._pace_corners = (key, corners)
    return corners


def _parse_breakpoints(campaign: Campaign) -> list[tuple[dt.datetime, Decimal]]:
    total = campaign.total_budget
    points = sorted(((parse_time(at), min(parse_value(v, total), total)) for at, v in campaign.pace_points or []),
                    key=lambda p: p[0])
    corners = [(campaign.starts_at, Decimal("0.00"))]
    for at, amount in points:
        if at <= corners[-1][0]:
            corners[-1] = (corners[-1][0], max(corners[-1][1], amount))
        else:
            corners.append((at, max(amount, corners[-1][1])))  # a plan never goes down
    return corners


def planned_amount(campaign: Campaign, now: dt.datetime) -> Decimal | None:
    """The budget the plan allows to be committed at `now`; None when the campaign has no plan."""
    if not has_plan(campaign):
        return None
    total = campaign.total_budget
    if now < campaign.starts_at:
        return Decimal("0.00")
    if campaign.pace_even_daily:
        first, days = _days(campaign)
        elapsed = min((local_day(now) - first).days + 1, days)
        return (total * elapsed / days).quantize(CENT, rounding=ROUND_FLOOR)
    corners = _breakpoints(campaign)
    for (t0, a0), (t1, a1) in zip(corners, corners[1:], strict=False):
        if t0 <= now < t1:
            part = Decimal(str((now - t0).total_seconds() / (t1 - t0).total_seconds()))
            return min(total, (a0 + (a1 - a0) * part).quantize(CENT, rounding=ROUND_FLOOR))
    return min(total, corners[-1][1])


def plan_allows_at(campaign: Campaign, amount: Decimal, now: dt.datetime) -> dt.datetime | None:
    """The first moment from `now` at which the plan allows `amount` committed; None if it never does."""
    if not has_plan(campaign):
        return now
    if (planned_amount(campaign, now) or 0) >= amount:
        return now
    total = campaign.total_budget
    if campaign.pace_even_daily:
        first, days = _days(campaign)
        if total <= 0:
            return None
        day_index = int((amount * days / total).to_integral_value(rounding="ROUND_CEILING"))  # days needed
        if day_index > days:
            return None
        return dt.datetime.combine(first + dt.timedelta(days=day_index - 1), dt.time.min, tzinfo=local_tz())
    corners = _breakpoints(campaign)
    for (t0, a0), (t1, a1) in zip(corners, corners[1:], strict=False):
        if a1 >= amount and t1 > now:
            if a0 >= amount or a1 == a0:
                return max(t0, now)
            at = t0 + (t1 - t0) * float((amount - a0) / (a1 - a0))
            return max(at, now) + dt.timedelta(seconds=1)
    return None


def plan_curve(campaign: Campaign, start: dt.datetime, end: dt.datetime, steps: int = 96) -> list[tuple]:
    """(time, planned amount) samples for the dashboard chart."""
    if not has_plan(campaign) or end <= start:
        return []
    span = end - start
    return [(start + span * i / steps, planned_amount(campaign, start + span * i / steps)) for i in range(steps + 1)]


# --- what one claim may do -----------------------------------------------------------------

def claim_share(campaign: Campaign, now: dt.datetime) -> Decimal | None:
    """The share of each bucket's allotment that may be committed after this claim; None = no plan limit.

    Throttle mode folds this claim's random draw into the share (see the module doc): the draw happens once
    per claim, so a claim that falls back to the slow path is judged by the same number.
    """
    if campaign.pace_mode not in ENFORCING:
        return None
    planned = planned_amount(campaign, now)
    total = campaign.total_budget
    if planned is None or total <= 0 or planned >= total:
        return None
    share = planned / total
    if campaign.pace_mode == PaceMode.THROTTLE:
        s = campaign.pace_throttle_from
        r = Decimal(RNG.random()).quantize(Decimal("0.000001"), rounding=ROUND_FLOOR)
        share *= s + r * (1 - s)
    return share.quantize(SHARE_QUANTUM, rounding=ROUND_FLOOR)


def pace_status(campaign: Campaign, committed: Decimal, now: dt.datetime) -> dict | None:
    """Plan vs actual for the dashboard and the alert; None without a plan."""
    planned = planned_amount(campaign, now)
    if planned is None:
        return None
    margin = campaign.pace_alert_margin
    ahead = committed - planned
    ratio = (committed / planned) if planned > 0 else (Decimal("Infinity") if committed > 0 else Decimal(1))
    return {
        "planned": planned,
        "committed": committed,
        "ahead": ahead,
        "ratio": ratio,
        "alert": committed > planned * (1 + margin) and committed > 0,
        "margin": margin,
    }
