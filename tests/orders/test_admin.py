import pytest
from django.contrib.auth import get_user_model

from orders.models import Order, Store
from orders.services import Line, OrderRequest, order_place
from tests.factories import UserFactory, VoucherFactory
from tests.orders.conftest import LAT, LNG
from vouchers.models import Voucher

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    admin = get_user_model().objects.create_superuser(username="root", password="pw-for-tests-123", phone=None)
    client.force_login(admin)
    return client


def test_admin_pages_and_cancel_action(catalogue, campaign, admin_client):
    user = UserFactory()
    card = VoucherFactory(user=user, campaign=campaign)
    store = Store.objects.get(brand__slug="chagee", open_24h=True)
    order = order_place(user=user, request=OrderRequest(lines=(Line(quantity=1, candidates=((store.brand_id, "伯牙绝弦"),)),),
                                                     lat=LAT, lng=LNG)).order
    for url in ["/admin/orders/order/", f"/admin/orders/order/{order.pk}/change/", "/admin/orders/store/",
                f"/admin/orders/store/{store.pk}/change/", "/admin/orders/product/", "/admin/orders/brand/"]:
        assert admin_client.get(url).status_code == 200, url
    r = admin_client.post("/admin/orders/order/", {"action": "cancel_orders", "_selected_action": [order.pk]})
    assert r.status_code == 302
    order.refresh_from_db()
    card.refresh_from_db()
    assert order.status == Order.Status.CANCELLED and card.status == Voucher.Status.ISSUED
