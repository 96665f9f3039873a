"""Demo catalogue: six tea brands, their menus and ~200 stores in Hangzhou and Shanghai.

`catalog_load` is idempotent (get_or_create by natural keys: brand slug, (brand, product name),
(brand, store name)), and deterministic (a seeded random generator), so seed_demo can run it
any number of times and every run produces the same stores at the same places.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from decimal import Decimal

from django.db import transaction

from orders.models import ICES, SUGARS, Brand, Product, Store

# The point the acceptance checks use (West Lake, Hangzhou).
HANGZHOU_CENTER = (30.2741, 120.1551)
SHANGHAI_CENTER = (31.2304, 121.4737)

ALL_SUGARS = list(SUGARS)
COLD_SUGARS = ["全糖", "七分糖", "半糖", "三分糖", "微糖", "无糖"]
ALL_ICES = list(ICES)
COLD_ONLY = ["正常冰", "少冰", "去冰"]
COLD_ROOM = ["正常冰", "少冰", "去冰", "常温"]
NO_ICE_CHEESE = ["少冰", "去冰"]

M_L = {"中杯": "0.00", "大杯": "3.00"}
L_ONLY = {"大杯": "0.00"}
L_XL = {"大杯": "0.00", "超大杯": "4.00"}
S_M_L = {"中杯": "0.00", "大杯": "3.00", "超大杯": "6.00"}


def _p(name, price, *, aliases=(), category="果茶", sizes=None, sugars=None, ices=None, default_size="", is_default=False):
    sizes = dict(sizes or M_L)
    return {
        "name": name,
        "price": Decimal(price),
        "aliases": list(aliases),
        "category": category,
        "sizes": sizes,
        "sugar_options": list(sugars or ALL_SUGARS),
        "ice_options": list(ices or ALL_ICES),
        "default_size": default_size or next(iter(sizes)),
        "is_default": is_default,
    }


BRANDS: list[dict] = [
    {
        "name": "喜茶",
        "slug": "heytea",
        "aliases": ["heytea", "喜茶go", "HEYTEA", "hey tea", "xicha"],
        "products": [
            _p("多肉葡萄", "19.00", aliases=["多肉葡萄冻", "葡萄冻"], sizes=L_XL, ices=COLD_ONLY),
            _p("芝芝莓莓", "22.00", aliases=["芝芝草莓", "莓莓", "芝莓"], sizes=L_XL, ices=NO_ICE_CHEESE),
            _p("烤黑糖波波牛乳", "16.00", aliases=["黑糖波波", "波波牛乳", "黑糖波波牛乳", "黑糖牛乳", "烤黑糖"], category="奶茶",
               sizes=L_ONLY,
               is_default=True),
            _p("多肉桃李", "19.00", aliases=["桃李"], sizes=L_ONLY, ices=COLD_ONLY),
            _p("酷黑莓桑", "19.00", aliases=["莓桑", "黑莓桑"], sizes=L_ONLY, ices=COLD_ROOM),
            _p("纯绿妍茶后", "9.00", aliases=["绿妍", "绿妍茶后", "纯绿妍"], category="纯茶", sizes=L_ONLY),
            _p("生椰拿铁", "16.00", aliases=["椰子拿铁", "生椰"], category="咖啡", sizes=L_ONLY,
               ices=["正常冰", "少冰", "去冰", "热"]),
        ],
    },
    {
        "name": "奈雪的茶",
        "slug": "nayuki",
        "aliases": ["奈雪", "nayuki", "naixue"],
        "products": [
            _p("霸气橙子", "19.00", aliases=["霸气鲜橙", "鲜橙", "霸气橙"], sizes=L_ONLY, ices=COLD_ONLY),
            _p("霸气芝士草莓", "28.00", aliases=["芝士草莓", "霸气草莓"], sizes=L_ONLY, ices=NO_ICE_CHEESE),
            _p("霸气玉油柑", "18.00", aliases=["玉油柑", "油柑"], sizes=L_ONLY, ices=COLD_ROOM),
            _p("金色山脉珍珠宝藏茶", "19.00", aliases=["宝藏茶", "珍珠宝藏茶", "金色山脉"], category="奶茶", sizes=L_ONLY,
               is_default=True),
            _p("鸭屎香柠檬茶", "15.00", aliases=["鸭屎香", "鸭屎香柠檬"], sizes=L_ONLY, ices=COLD_ONLY),
        ],
    },
    {
        "name": "蜜雪冰城",
        "slug": "mixue",
        "aliases": ["蜜雪", "mixue", "雪王", "mixuebingcheng"],
        "products": [
            _p("冰鲜柠檬水", "4.00", aliases=["柠檬水", "冰柠檬水", "鲜柠檬水"], sizes={"中杯": "0.00", "大杯": "2.00"},
               ices=COLD_ONLY),
            _p("珍珠奶茶", "7.00", aliases=["珍奶", "珍珠奶茶"], category="奶茶", sizes={"中杯": "0.00", "大杯": "2.00"},
               is_default=True),
            _p("蜜桃四季春", "7.00", aliases=["桃桃四季春", "四季春"], sizes={"中杯": "0.00", "大杯": "2.00"}, ices=COLD_ROOM),
            _p("满杯百香果", "8.00", aliases=["百香果"], sizes={"中杯": "0.00", "大杯": "2.00"}, ices=COLD_ONLY),
            _p("摩天脆脆冰淇淋", "4.00", aliases=["冰淇淋", "甜筒", "冰激凌", "摩天脆脆"], category="冰淇淋",
               sizes={"中杯": "0.00"},
               sugars=["全糖"], ices=["正常冰"]),
            _p("棒打鲜橙", "6.00", aliases=["鲜橙汁"], sizes={"中杯": "0.00", "大杯": "2.00"}, ices=COLD_ONLY),
        ],
    },
    {
        "name": "茶百道",
        "slug": "chabaidao",
        "aliases": ["chabaidao", "百道", "ChaPanda"],
        "products": [
            _p("杨枝甘露", "16.00", aliases=["杨枝", "芒果西柚"], sizes=M_L, ices=COLD_ROOM),
            _p("豆乳玉麒麟", "16.00", aliases=["玉麒麟", "豆乳奶茶", "豆乳麒麟"], category="奶茶", sizes=M_L, is_default=True),
            _p("招牌芋圆奶茶", "15.00", aliases=["芋圆奶茶", "芋圆"], category="奶茶", sizes=M_L),
            _p("茉莉奶绿", "12.00", aliases=["奶绿"], category="奶茶", sizes=M_L),
            _p("西瓜啵啵", "14.00", aliases=["西瓜波波"], sizes=M_L, ices=COLD_ONLY),
        ],
    },
    {
        "name": "古茗",
        "slug": "goodme",
        "aliases": ["goodme", "古茗茶饮", "guming"],
        "products": [
            _p("芝士葡萄", "18.00", aliases=["芝士葡萄冻"], sizes=M_L, ices=NO_ICE_CHEESE),
            _p("杨枝甘露", "15.00", aliases=[], sizes=M_L, ices=COLD_ROOM),
            _p("珍珠奶茶", "10.00", aliases=[], category="奶茶", sizes=M_L),
            _p("超A芝士葡萄", "20.00", aliases=["超a芝士葡萄", "超A"], sizes=L_ONLY, ices=NO_ICE_CHEESE),
            _p("布蕾脆脆奶芙", "16.00", aliases=["奶芙", "布蕾奶芙", "布蕾脆脆"], category="奶茶", sizes=M_L, is_default=True),
            _p("生椰拿铁", "13.00", aliases=[], category="咖啡", sizes=M_L, ices=["正常冰", "少冰", "去冰", "热"]),
            _p("龙井香青团", "16.00", aliases=["青团奶茶", "青团"], category="奶茶", sizes=M_L),
        ],
    },
    {
        "name": "霸王茶姬",
        "slug": "chagee",
        "aliases": ["chagee", "霸王", "茶姬", "bawangchaji"],
        "products": [
            _p("伯牙绝弦", "18.00", aliases=["伯牙"], category="奶茶", sizes=S_M_L, default_size="中杯", is_default=True),
            _p("青青糯山", "20.00", aliases=["糯山"], category="奶茶", sizes=S_M_L, default_size="中杯"),
            _p("桂馥兰香", "18.00", aliases=["桂馥"], category="奶茶", sizes=S_M_L, default_size="中杯"),
            _p("寻香山茶", "18.00", aliases=["山茶"], category="奶茶", sizes=S_M_L, default_size="中杯"),
            _p("花田乌龙", "19.00", aliases=["乌龙奶茶"], category="奶茶", sizes=S_M_L, default_size="中杯"),
        ],
    },
]

CITIES = {
    "杭州": {
        "center": HANGZHOU_CENTER,
        "spread_km": 9.0,
        "districts": ["上城区", "拱墅区", "西湖区", "滨江区", "萧山区", "余杭区", "临平区"],
        "streets": ["延安路", "湖滨路", "文三路", "武林路", "庆春路", "解放路", "南山路", "体育场路", "凤起路",
                    "文一西路", "江南大道", "莫干山路", "天目山路", "钱江路", "学院路"],
    },
    "上海": {
        "center": SHANGHAI_CENTER,
        "spread_km": 12.0,
        "districts": ["黄浦区", "徐汇区", "静安区", "长宁区", "浦东新区", "虹口区", "杨浦区", "普陀区"],
        "streets": ["南京东路", "淮海中路", "徐家汇路", "陆家嘴环路", "四川北路", "五角场路", "长寿路", "天山路",
                    "世纪大道", "衡山路", "愚园路", "张杨路", "延安西路", "武宁路", "人民路"],
    },
}

# (opens_at, closes_at); closes <= opens means open past midnight.
HOURS = [
    (dt.time(10, 0), dt.time(22, 0)),
    (dt.time(9, 30), dt.time(21, 30)),
    (dt.time(10, 0), dt.time(23, 0)),
    (dt.time(8, 0), dt.time(22, 0)),
    (dt.time(11, 0), dt.time(2, 0)),
]


def _offset(center: tuple[float, float], north_km: float, east_km: float) -> tuple[float, float]:
    lat = center[0] + north_km / 111.32
    lng = center[1] + east_km / (111.32 * math.cos(math.radians(center[0])))
    return round(lat, 6), round(lng, 6)


def _store_specs(stores_per_city: int) -> list[dict]:
    """Deterministic store list: the same input always gives the same names, places and hours."""
    rng = random.Random(20260323)
    specs: list[dict] = []
    slugs = [b["slug"] for b in BRANDS]
    # One round-the-clock store per brand within ~1.5 km of the Hangzhou check point.
    for i, slug in enumerate(slugs):
        angle = 2 * math.pi * i / len(slugs)
        lat, lng = _offset(HANGZHOU_CENTER, 0.4 + 0.2 * i * math.cos(angle), 0.4 + 0.2 * i * math.sin(angle))
        specs.append({
            "brand": slug, "name": "西湖湖滨24小时店", "city": "杭州", "district": "上城区",
            "address": f"杭州市上城区湖滨路{10 + i * 7}号", "lat": lat, "lng": lng,
            "opens_at": None, "closes_at": None, "open_24h": True, "capacity_per_minute": 20,
        })
    for city, info in CITIES.items():
        used: set[tuple[str, str]] = set()
        for n in range(stores_per_city):
            slug = slugs[n % len(slugs)]
            district = rng.choice(info["districts"])
            street = rng.choice(info["streets"])
            no = rng.randint(1, 999)
            # Stores cluster towards the centre, as real ones do.
            r = info["spread_km"] * math.sqrt(rng.random())
            theta = rng.uniform(0, 2 * math.pi)
            lat, lng = _offset(info["center"], r * math.cos(theta), r * math.sin(theta))
            name = f"{district.removesuffix('区').removesuffix('新')}{street}店"
            k = 2
            while (slug, name) in used:
                name = f"{district.removesuffix('区').removesuffix('新')}{street}{k}店"
                k += 1
            used.add((slug, name))
            open_24h = rng.random() < 0.08
            opens, closes = (None, None) if open_24h else rng.choice(HOURS)
            specs.append({
                "brand": slug, "name": name, "city": city, "district": district,
                "address": f"{city}市{district}{street}{no}号", "lat": lat, "lng": lng,
                "opens_at": opens, "closes_at": closes, "open_24h": open_24h,
                "capacity_per_minute": rng.choice([5, 8, 10, 12, 15, 20, 30]),
            })
    return specs


def catalog_load(*, stores_per_city: int = 100, stdout=None) -> dict:
    """Create brands, products and stores if missing; never modifies rows that already exist."""
    created = {"brands": 0, "products": 0, "stores": 0}
    with transaction.atomic():
        brands: dict[str, Brand] = {}
        for b in BRANDS:
            brand, made = Brand.objects.get_or_create(
                slug=b["slug"], defaults={"name": b["name"], "aliases": b["aliases"], "participating": True}
            )
            brands[b["slug"]] = brand
            created["brands"] += made
            for p in b["products"]:
                _, made = Product.objects.get_or_create(
                    brand=brand, name=p["name"], defaults={k: v for k, v in p.items() if k != "name"}
                )
                created["products"] += made
        for s in _store_specs(stores_per_city):
            defaults = {k: v for k, v in s.items() if k not in ("brand", "name")}
            _, made = Store.objects.get_or_create(brand=brands[s["brand"]], name=s["name"], defaults=defaults)
            created["stores"] += made
    if stdout is not None:
        stdout.write(
            f"catalogue: {created['brands']} brands, {created['products']} products, {created['stores']} stores created"
        )
    return created
