import math

import pytest

from demo.catalog import HANGZHOU_CENTER, catalog_load
from orders.models import Brand, Product, Store

REQUIRED = {
    "喜茶": ["多肉葡萄", "芝芝莓莓", "烤黑糖波波牛乳"],
    "奈雪的茶": ["霸气橙子", "霸气芝士草莓"],
    "蜜雪冰城": ["冰鲜柠檬水", "珍珠奶茶", "蜜桃四季春"],
    "茶百道": ["杨枝甘露", "豆乳玉麒麟"],
    "古茗": ["芝士葡萄", "杨枝甘露"],
    "霸王茶姬": ["伯牙绝弦", "青青糯山"],
}


def _km(lat1, lng1, lat2, lng2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    return 6371.0088 * 2 * math.asin(math.sqrt(a))


@pytest.mark.django_db
def test_catalog_has_contract_products_and_24h_stores_near_check_point():
    created = catalog_load()
    assert created["brands"] == 6
    assert 190 <= Store.objects.count() <= 220
    for brand, products in REQUIRED.items():
        for name in products:
            assert Product.objects.filter(brand__name=brand, name=name, active=True).exists(), (brand, name)
        b = Brand.objects.get(name=brand)
        assert b.products.filter(is_default=True).count() == 1
        near = [s for s in b.stores.filter(open_24h=True, active=True) if _km(*HANGZHOU_CENTER, s.lat, s.lng) <= 3]
        assert near, brand
    assert Product.objects.filter(name="生椰拿铁").exists()


@pytest.mark.django_db
def test_catalog_load_is_idempotent_and_deterministic():
    catalog_load()
    before = list(Store.objects.order_by("id").values_list("brand_id", "name", "lat", "lng", "opens_at", "capacity_per_minute"))
    again = catalog_load()
    assert again == {"brands": 0, "products": 0, "stores": 0}
    after = list(Store.objects.order_by("id").values_list("brand_id", "name", "lat", "lng", "opens_at", "capacity_per_minute"))
    assert before == after
