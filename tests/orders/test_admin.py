import json

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


def test_marketing_adds_an_alias_in_admin_and_chat_understands_it(catalogue, admin_client):
    """Aliases are edited as plain lines (not JSON) and work right away, without a deploy."""
    from orders.models import Product
    from orders.parser import Intent, Refusal, parse

    product = Product.objects.get(brand__slug="heytea", name="芝芝莓莓")
    assert isinstance(parse("来杯莓莓芝芝"), Refusal)
    page = admin_client.get(f"/admin/orders/product/{product.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "别名（每行一个）" in html and "芝芝草莓\n莓莓" in html and "错别字纠正（按拼音）" in html and "zhi" in html
    form = {f: v for f, v in {
        "brand": product.brand_id, "name": product.name, "category": product.category, "price": product.price,
        "sizes": json.dumps(product.sizes), "sugar_options": json.dumps(product.sugar_options),
        "ice_options": json.dumps(product.ice_options), "default_size": product.default_size,
        "is_default": "", "active": "on",
    }.items() if v != ""}
    form["aliases"] = "芝芝草莓\n莓莓，莓莓芝芝、 芝莓\n"
    r = admin_client.post(f"/admin/orders/product/{product.pk}/change/", form)
    assert r.status_code == 302, r.content.decode()[:2000]
    product.refresh_from_db()
    assert product.aliases == ["芝芝草莓", "莓莓", "莓莓芝芝", "芝莓"]
    got = parse("来杯莓莓芝芝")
    assert isinstance(got, Intent) and got.items[0].product == "芝芝莓莓"


def test_brand_alias_in_admin(catalogue, admin_client):
    from orders.models import Brand
    from orders.parser import Intent, parse

    brand = Brand.objects.get(slug="goodme")
    r = admin_client.post(f"/admin/orders/brand/{brand.pk}/change/",
                          {"name": brand.name, "slug": brand.slug, "aliases": "goodme\n古茗茶饮\n小古", "participating": "on"})
    assert r.status_code == 302, r.content.decode()[:2000]
    got = parse("小古的芝士葡萄")
    assert isinstance(got, Intent) and got.items[0].brand == "古茗"
