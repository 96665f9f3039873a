"""Bulk preparation for load tests and big fulfilment tests: many placed orders at once, ledger-consistent.

`orders_bulk_place` writes, in a few multi-row statements, what `order_place` writes one order at a
time: users with one welcome card each (bucket counters + reserve ledger rows, so `reconcile` passes),
then one placed order per user at one store with its item, its card locked to it and its first
OrderEvent. It measures nothing and checks nothing (no capacity, no store choice): it is preparation
for benchmarks and tests whose subject is what happens *after* placement (fulfilment), where placing
tens of thousands of orders through HTTP first would take longer than the thing measured. The orders
are handed to fulfilment exactly like placed orders: `orders_bulk_send` queues their submit tasks.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal

from django.db import transaction
from django.db.models import F, Max, OuterRef, Subquery
from django.utils import timezone

from accounts.models import User
from campaign.models import BudgetBucket, Campaign, LedgerEntry
from miandan.tasks import enqueue
from orders.merchant import get_merchant
from orders.models import Order, OrderEvent, OrderItem, Product, Store
from orders.services import SUBMIT_TASK
from vouchers.models import Voucher
from vouchers.services import new_voucher_code


def orders_bulk_place(*, campaign: Campaign, count: int, store: Store | None = None, product: Product | None = None,
                      phone_digit: int = 7, batch: int = 2000) -> list[int]:
    """`count` placed orders (one per new user, each paid with that user's new card). Returns the order ids."""
    store = store or Store.objects.filter(open_24h=True, active=True).order_by("id").first()
    product = product or Product.objects.filter(brand_id=store.brand_id, is_default=True).first() or \
        Product.objects.filter(brand_id=store.brand_id).first()
    buckets = list(BudgetBucket.objects.filter(campaign=campaign).order_by("index"))
    merchant = get_merchant().name
    ids: list[int] = []
    for start in range(0, count, batch):
        n = min(batch, count - start)
        with transaction.atomic():
            base = (User.objects.aggregate(m=Max("id"))["m"] or 0) + 1
            users = User.objects.bulk_create(
                [User(username=f"1{phone_digit}{base + i:09d}", phone=f"1{phone_digit}{base + i:09d}", password="!")
                 for i in range(n)])
            now = timezone.now()
            cards = Voucher.objects.bulk_create(
                [Voucher(code=new_voucher_code(), campaign=campaign, user=u, bucket=buckets[u.pk % len(buckets)], slot=1,
                         cap=campaign.card_cap, source=Voucher.Source.WELCOME, face_value=campaign.face_value,
                         expires_at=now + campaign.card_validity) for u in users])
            per_bucket: dict[int, Decimal] = defaultdict(Decimal)
            for card in cards:
                per_bucket[card.bucket_id] += card.face_value
            for bucket_id in sorted(per_bucket):  # bucket rows in key order, as every budget writer does
                BudgetBucket.objects.filter(pk=bucket_id).update(reserved=F("reserved") + per_bucket[bucket_id])
            LedgerEntry.objects.bulk_create(
                [LedgerEntry(campaign=campaign, bucket_id=c.bucket_id, kind=LedgerEntry.Kind.RESERVE, amount=c.face_value,
                             voucher_id=c.pk, reason="批量准备：新人卡") for c in cards])
            price = product.price
            subsidy = min(price, campaign.face_value)
            check = now + dt.timedelta(hours=1)  # the test or bench sends them itself (orders_bulk_send)
            orders = Order.objects.bulk_create(
                [Order(user=u, campaign=campaign, store=store, voucher=c, status=Order.Status.PLACED, total_price=price,
                       subsidy=subsidy, amount_to_pay=price - subsidy, source_text="批量准备", merchant=merchant,
                       next_check_at=check) for u, c in zip(users, cards, strict=True)])
            OrderItem.objects.bulk_create(
                [OrderItem(order=o, product=product, quantity=1, unit_price=price, line_total=price) for o in orders])
            OrderEvent.objects.bulk_create(
                [OrderEvent(order=o, from_status="", to_status=Order.Status.PLACED, note="批量下单") for o in orders])
            Voucher.objects.filter(pk__in=[c.pk for c in cards]).update(
                status=Voucher.Status.LOCKED, locked_at=now,
                order_id=Subquery(Order.objects.filter(voucher_id=OuterRef("pk")).values("pk")[:1]))
            ids += [o.pk for o in orders]
    return ids


def orders_bulk_send(order_ids: list[int]) -> int:
    """Queue the submit task of each order (what placement does on commit). Returns how many were queued."""
    return sum(1 for order_id in order_ids if enqueue(SUBMIT_TASK, order_id))
