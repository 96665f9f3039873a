"""Order intervention from admin (cancel, re-send): orders.can_intervene (support, superusers), audited."""

import logging

import pytest
from django.contrib.auth.models import Permission

from campaign.models import AuditLog
from orders.models import Order
from orders.services import InterventionDenied, order_staff_cancel
from tests.factories import OrderFactory, StaffFactory

pytestmark = pytest.mark.django_db


def _cancel(client, order):
    return client.post("/admin/orders/order/", {"action": "cancel_orders", "_selected_action": [order.pk]})


def test_support_cancels_and_it_is_audited(client, caplog):
    support = StaffFactory(groups=["support"])
    order = OrderFactory()
    client.force_login(support)
    assert "cancel_orders" in client.get("/admin/orders/order/").content.decode()
    with caplog.at_level(logging.INFO, logger="orders.services"):
        assert _cancel(client, order).status_code == 302
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    entry = AuditLog.objects.get(action="order.cancel", object_id=str(order.pk))
    assert entry.actor == support and entry.before == {"status": "placed"} and entry.after == {"status": "cancelled"}
    assert f"staff cancelled order {order.pk}" in caplog.text
    # Re-send is audited the same way.
    live = OrderFactory()
    client.post("/admin/orders/order/", {"action": "resend_orders", "_selected_action": [live.pk]})
    assert AuditLog.objects.filter(action="order.resend", object_id=str(live.pk), actor=support).exists()


@pytest.mark.parametrize("groups, extra", [(["marketing"], []), (["finance"], []), ([], ["change_order"])])
def test_without_the_permission_nothing_happens(client, groups, extra):
    staff = StaffFactory(groups=groups)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_order", *extra]))
    order = OrderFactory()
    client.force_login(staff)
    listing = client.get("/admin/orders/order/")
    assert listing.status_code == 200 and "cancel_orders" not in listing.content.decode()
    _cancel(client, order)
    order.refresh_from_db()
    assert order.status == Order.Status.PLACED
    assert not AuditLog.objects.filter(action="order.cancel").exists()
    # The service itself refuses too (a script or another view cannot go around the admin).
    with pytest.raises(InterventionDenied):
        order_staff_cancel(actor=staff, order_ids=[order.pk])


def test_only_support_holds_it_among_the_groups():
    from django.contrib.auth.models import Group

    holders = set(Group.objects.filter(permissions__codename="can_intervene").values_list("name", flat=True))
    assert holders == {"support"}
