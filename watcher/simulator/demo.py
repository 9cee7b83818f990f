"""The demo world: its stores, showcase, search and rankings at step 0 (no script here).

Key products have fixed ids, so ``watcher/demo.yaml`` and tests can name them; the filler
around them (ids, prices, sales, order) comes from the seed.
"""

from __future__ import annotations

import random
from decimal import Decimal

from .world import (
    Category,
    CategoryRow,
    Item,
    Ranking,
    Search,
    Shop,
    Showcase,
    Store,
    World,
    slugify,
)

DEFAULT_SEED = 20261124

STORE_URL = "https://www.tiktok.com/shop/store/goli-nutrition/7495794203056835079"
SHOP_ID = "7495794203056835079"
HANDLE = "glowwithmia"
QUERY = "crocs clogs"
CATEGORY_ID = "601450"  # Beauty & Personal Care (first level)

# store products with a part in the timeline
ACV = "1729589255770378759"  # step 1: 19.99 -> 16.99
ASHWAGANDHA = "1729527313880355335"  # step 1: 21.99 -> 20.99 (under 10%)
MATCHA = "1731518803376542215"  # step 2: 12.99 -> 10.99, step 4: 12.99, step 6: 11.49
PREBIOTIC = "1731202559418012167"  # step 2: 16.99 -> 18.99, step 5: 14.99
SUPERGREENS = "1730944871223480391"  # step 3: 44.99 -> 34.99, discount 25% -> 42%
RESTORE_KIT = "1732299628898390535"  # sold out in steps 3-5, back in step 6
HOLIDAY_SET = "1732617942190829575"  # new in the store at step 7
SLEEP = "1729811265030918663"  # step 8: 29.99 -> 24.99
# showcase
CERAVE = "1729508370969629931"  # step 4: 17.99 -> 14.99
SHOWCASE_NEW_2 = ("1732408815528726634", "1732481129806468202")  # added at step 2
SHOWCASE_NEW_8 = "1732720417355109994"  # added at step 8
# search
CLASSIC_CLOG = "1730213444857467838"  # 44.99 -> 34.99 (step 2) -> 29.99 (step 4); rank 10 -> 2
BAYA = "1729384915736252478"  # step 3: rank 14 -> 4
# top_products rows (third_ecom_category.id)
LIP_GLOSS = "601602"  # step 5: rank 17 -> 3
TEETH_WHITENING = "601726"  # step 7: rank 13 -> 6


# ---------------------------------------------------------------- world content

_GOLI_LOGO = "https://p16-oec-va.ibyteimg.com/tos-maliva-avt-0068/goli-nutrition-logo.png"
_ShopRef = tuple[str, str]  # (shop id, shop name)
_GOLI: _ShopRef = (SHOP_ID, "Goli Nutrition")

_STORE_KEY = (  # (position, id, title, price, original)
    (2, ACV, "Goli Apple Cider Vinegar Gummy Vitamins - 60 Count, Vegan, Plant Based, "
     "Non-GMO, Gluten-Free & Gelatin Free", "19.99", "24.99"),
    (5, ASHWAGANDHA, "Goli Ashwagandha & Vitamin D Gummy - Mixed Berry, KSM-66, Vegan, "
     "Plant Based, Non-GMO, Gluten-Free & Gelatin Free.", "21.99", "24.99"),
    (9, MATCHA, "Goli Matcha Gummies - Green Tea, Calm Energy, 60 Count", "12.99", "15.99"),
    (12, SUPERGREENS, "Goli Supergreens Gummies - 3 Pack, 180 Count, Spinach, Kale & "
     "Wheatgrass", "44.99", "59.99"),
    (17, RESTORE_KIT, "Goli Restore Kit - 1 Silk Pillow Case & 1 Silk Eye Mask", "99.98", None),
    (23, PREBIOTIC, "Goli Pre-Biotic Gummies - Gut Health & Digestion, Mixed Berry, 60 Count",
     "16.99", "19.99"),
    (31, SLEEP, "Goli Sleep Gummies - Melatonin-Free, Mixed Berry, 60 Count", "29.99", "34.99"),
)  # fmt: skip

_STORE_FILLER = (
    "Goli Ashwagandha Gummies - 2 Pack, 120 Count",
    "Goli Apple Cider Vinegar Gummy Vitamins - 3 Pack, 180 Count",
    "Goli Dreamy Sleep Gummies with Melatonin & Magnesium - 60 Count",
    "Goli Beauty Gummies for Hair, Skin & Nails - Biotin & Vitamin C, 60 Count",
    "Goli Immune Gummies - Vitamin C, Zinc & Elderberry, 60 Count",
    "Goli Magnesium Gummies - Calm & Relax, Mixed Berry, 60 Count",
    "Goli Creatine Gummies - 5g Creatine Monohydrate, Tropical, 60 Count",
    "Goli Electrolyte Gummies - Lemon Lime, Sugar Free, 45 Count",
    "Goli Mushroom Focus Gummies - Lion's Mane & Reishi, 60 Count",
    "Goli Collagen Gummies - Type I & III, Strawberry, 60 Count",
    "Goli Apple Cider Vinegar + Ashwagandha Bundle - 2 x 60 Count",
    "Goli Supergreens Gummies - 60 Count",
    "Goli Pre-Biotic + Probiotic Gummies - 2 Pack",
    "Goli Kids Multivitamin Gummies - Fruit Punch, 60 Count",
    "Goli Women's Multi Gummies - 60 Count",
    "Goli Men's Multi Gummies - 60 Count",
    "Goli Vitamin D3 Gummies - 2000 IU, Orange, 60 Count",
    "Goli Turmeric & Ginger Gummies - 60 Count",
    "Goli Omega-3 Gummies - Lemon, Burpless, 60 Count",
    "Goli Energy Gummies - B12 & Green Tea, Peach, 60 Count",
    "Goli Iron Gummies - Cherry, Vegan, 60 Count",
    "Goli Fiber Gummies - Prebiotic Fiber, Berry, 60 Count",
    "Goli Stress Relief Gummies - L-Theanine & Lemon Balm, 60 Count",
    "Goli Hair Growth Gummies - Biotin 5000mcg, 60 Count",
    "Goli Gummy Sampler Pack - 6 Flavors",
)

_CROCS: _ShopRef = ("7495832567110863806", "Crocs")
_SEARCH_KEY = (  # (position, id, title, price, original)
    (9, CLASSIC_CLOG, "Crocs Unisex-Adult Classic Clogs, Lightweight Slip-On Water Shoes",
     "44.99", "54.99"),
    (14, BAYA, "Crocs Baya Platform Clog, Unisex Lightweight Slip-On", "54.99", "64.99"),
)  # fmt: skip
_SEARCH_FILLER = (  # (title, sold by Crocs?)
    ("Crocs Classic Lined Clog, Fuzzy Slip-On Shoes", True),
    ("Crocs Echo Clog, Unisex Lightweight Sport Clogs", True),
    ("Crocs Classic Platform Clog for Women", True),
    ("Crocs Bayaband Clog, Unisex Adult", True),
    ("Crocs LiteRide 360 Clog", True),
    ("Crocs Mellow Recovery Clog", True),
    ("Crocs Dylan Platform Clog", True),
    ("Crocs Classic Crush Clog, Platform Shoes", True),
    ("Crocs Off Court Clog", True),
    ("Crocs Echo Storm Clog", True),
    ("Crocs Kids' Baya Clog", True),
    ("Crocs Classic Cozzzy Sandal", True),
    ("Crocs Stomp Lined Clog", True),
    ("Crocs Classic Marbled Clog", True),
    ("Crocs Duet Max II Clog", True),
    ("Unisex Garden Clogs, Lightweight Slip-On Beach Shoes with Strap", False),
    ("EVA Cloud Clogs for Women, Pillow Soft Platform Slides", False),
    ("Men's Garden Clogs, Waterproof Slip-On Work Shoes", False),
    ("Shoe Charms 30-Pack for Clogs, Cute Cartoon Pins", False),
    ("Fuzzy Clog Liners, Removable Plush Insoles for Clogs (2 Pairs)", False),
    ("Kids' Lightweight Clogs with Adjustable Heel Strap", False),
    ("Nurse Clogs for Women, Non-Slip Comfortable Work Shoes", False),
    ("Platform Clogs for Women, Thick-Sole Cloud Slippers", False),
)
_OTHER_SHOPS = ("Comfy Steps Store", "SoleMates Official", "Garden Stride", "Cloudwalk US")

_SHOWCASE = (  # (title, price, original); the None row is the sparse item
    ("The Ordinary Niacinamide 10% + Zinc 1% Serum 30ml", "6.00", None),
    ("COSRX Advanced Snail 96 Mucin Power Essence 100ml", "17.59", "25.00"),
    ("CeraVe Hydrating Facial Cleanser 16 oz", "17.99", "19.99"),
    ("Laneige Lip Sleeping Mask Berry 20g", "24", None),
    ("e.l.f. Power Grip Primer", "10", None),
    ("Maybelline Lash Sensational Sky High Mascara", "9.9", "13.99"),
    ("Tree Hut Shea Sugar Scrub Tropical Glow 18oz", "10.99", None),
    ("Medicube Zero Pore Pad 2.0 (70 pads)", "21", "36"),
    ("Anua Heartleaf 77% Soothing Toner 250ml", "19.5", "29"),
    ("Beauty of Joseon Relief Sun: Rice + Probiotics SPF50+", "12.6", "18"),
    (None, None, None),  # no title, price, rating, seller or image: upstream allows it
    ("Mielle Rosemary Mint Scalp & Hair Strengthening Oil", "9.99", None),
    ("Glow Recipe Watermelon Glow Niacinamide Dew Drops", "35", None),
    ("Olaplex No.3 Hair Perfector", "30", None),
)
_SHOWCASE_LATER = {
    SHOWCASE_NEW_2[0]: ("Bubble Skincare Slam Dunk Hydrating Moisturizer", "18.99", None),
    SHOWCASE_NEW_2[1]: ("Rare Beauty Soft Pinch Liquid Blush", "23", None),
    SHOWCASE_NEW_8: ("Summer Fridays Lip Butter Balm", "24", None),
}

_BEAUTY = Category(CATEGORY_ID, "Beauty & Personal Care")
_SECONDS = {
    "makeup": Category("848648", "Makeup & Perfume", CATEGORY_ID),
    "skin": Category("848652", "Skincare", CATEGORY_ID),
    "hair": Category("848660", "Haircare & Styling", CATEGORY_ID),
    "body": Category("848671", "Bath & Body Care", CATEGORY_ID),
    "oral": Category("848677", "Nasal & Oral Care", CATEGORY_ID),
    "nails": Category("848683", "Nails", CATEGORY_ID),
}
_BEAUTY_ROWS = (  # ranking order at step 0: (third id, name, second)
    ("601583", "Perfume", "makeup"), ("601611", "Face Serums", "skin"),
    ("601589", "Lipstick", "makeup"), ("601615", "Moisturizers", "skin"),
    ("601593", "Foundation", "makeup"), ("601651", "Shampoo", "hair"),
    ("601619", "Facial Cleansers", "skin"), ("601596", "Mascara", "makeup"),
    ("601623", "Sunscreen", "skin"), ("601690", "Body Wash", "body"),
    ("601655", "Hair Oils", "hair"), (TEETH_WHITENING, "Teeth Whitening", "oral"),
    ("601627", "Face Masks", "skin"), ("601598", "Concealer", "makeup"),
    ("601694", "Body Lotion", "body"), ("601600", "Eyeshadow", "makeup"),
    (LIP_GLOSS, "Lip Gloss", "makeup"), ("601631", "Toners", "skin"),
    ("601659", "Conditioner", "hair"), ("601604", "Blush", "makeup"),
    ("601698", "Deodorant", "body"), ("601635", "Eye Creams", "skin"),
    ("601663", "Hair Masks", "hair"), ("601722", "Toothpaste", "oral"),
    ("601606", "Setting Spray", "makeup"), ("601667", "Hair Dryers", "hair"),
    ("601639", "Acne Treatments", "skin"), ("601730", "Electric Toothbrushes", "oral"),
    ("601741", "Nail Polish", "nails"), ("601608", "Makeup Brushes", "makeup"),
)  # fmt: skip
_OTHER_RANKINGS = {
    "605196": ("Sports & Outdoor", "605199", "Fitness Equipment", (
        ("605217", "Resistance Bands"), ("605221", "Yoga Mats"), ("605225", "Dumbbells"),
        ("605229", "Jump Ropes"), (None, "Fitness Equipment"))),
    "600001": ("Home Supplies", "600024", "Home Organizers", (
        ("600101", "Storage Boxes & Bins"), ("600105", "Drawer Organizers"),
        ("600109", "Closet Organizers"), (None, "Home Organizers"))),
}  # fmt: skip


def _product_id(rng: random.Random) -> str:
    return str(rng.randrange(1729380000000000000, 1732999999999999999))


def _shop_id(rng: random.Random) -> str:
    return str(rng.randrange(7494000000000000000, 7496999999999999999))


def _list_price(rng: random.Random, price: Decimal) -> Decimal | None:
    if rng.random() < 0.35:
        return None
    raised = price * Decimal(str(rng.choice((1.15, 1.2, 1.25, 1.3, 1.4))))
    return raised.quantize(Decimal(1)) - Decimal("0.01")


def _sales(rng: random.Random, item: Item) -> Item:
    """Give ``item`` plausible sales, reviews and rating."""
    item.sold = int(10 ** rng.uniform(3, 6.1))
    item.reviews = item.sold // rng.randint(9, 40)
    item.rating = rng.choice((4.2, 4.4, 4.5, 4.6, 4.7, 4.8))
    return item


def _filler_item(rng: random.Random, title: str, prices: tuple[str, ...], shop: _ShopRef) -> Item:
    price = Decimal(rng.choice(prices))
    item = _sales(rng, Item(_product_id(rng), title, price, shop_id=shop[0], shop_name=shop[1]))
    item.original = _list_price(rng, price)
    if rng.random() < 0.12:  # sparse cards, as upstream sends them
        item.reviews, item.rating = None, None
    if rng.random() < 0.3:
        item.labels = (("Free shipping", 8),)
    if rng.random() < 0.15:
        item.labels += (("Buy 2, save 5%", 3),)
    return item


def _key_item(
    rng: random.Random, pid: str, title: str, price: str, original: str | None, shop: _ShopRef
) -> Item:
    item = Item(pid, title, Decimal(price), shop_id=shop[0], shop_name=shop[1])
    item.original = Decimal(original) if original else None
    return _sales(rng, item)


def _store(rng: random.Random) -> Store:
    filler = [
        _filler_item(rng, t, ("9.99", "14.96", "16.99", "19.99", "24.99", "29.99", "39.99"), _GOLI)
        for t in _STORE_FILLER
    ]
    rng.shuffle(filler)
    for item in filler:
        if rng.random() < 0.25:
            item.description = "Delicious, vegan gummies made with real ingredients."
        item.ship_from = rng.choice((None, None, "Los Angeles, CA"))
    for pos, pid, title, price, original in _STORE_KEY:
        filler.insert(pos - 1, _key_item(rng, pid, title, price, original, _GOLI))
    shop = Shop(
        SHOP_ID,
        "Goli Nutrition",
        _GOLI_LOGO,
        STORE_URL,
        region="US",
        rating=4.6,
        sold=3767605,
        reviews=284185,
        followers=237879,
        videos=2413,
    )
    return Store(STORE_URL, shop, filler)


def _search(rng: random.Random) -> Search:
    shops = [(_shop_id(rng), name) for name in _OTHER_SHOPS]
    items = []
    for title, by_crocs in _SEARCH_FILLER:
        shop = _CROCS if by_crocs else rng.choice(shops)
        prices = ("29.99", "39.99", "44.99", "49.99", "59.99") if by_crocs else ("12.99", "19.99")
        item = _filler_item(rng, title, prices, shop)
        item.ship_from = "Fontana, CA" if by_crocs else rng.choice((None, "Ontario, CA"))
        item.trust_label = "gold" if by_crocs else None
        items.append(item)
    rng.shuffle(items)
    for pos, pid, title, price, original in _SEARCH_KEY:
        item = _key_item(rng, pid, title, price, original, _CROCS)
        item.ship_from, item.trust_label = "Fontana, CA", "gold"
        item.labels = (("Free shipping", 8),)
        items.insert(pos - 1, item)
    for item in items:
        item.slug = slugify(item.title) if item.title else None
    return Search(QUERY, items)


def _showcase_item(
    rng: random.Random, pid: str, title: str | None, price: str | None, original: str | None
) -> Item:
    item = Item(
        pid,
        title,
        Decimal(price) if price else None,
        Decimal(original) if original else None,
        shop_id=_shop_id(rng),
    )
    _sales(rng, item)
    commission = rng.choice((8, 10, 12, 15, 20))
    item.details = {
        "product_status": "ONLINE",
        "sku_count": rng.randint(1, 6),
        "commission_rate": f"{commission}%",
    }
    if price is None:  # the sparse item: no price, rating, seller or image
        item.rating, item.reviews, item.shop_id, item.has_image = None, None, None, False
    return item


def _showcase(rng: random.Random) -> Showcase:
    items = []
    for title, price, original in _SHOWCASE:
        pid = CERAVE if title and title.startswith("CeraVe") else _product_id(rng)
        items.append(_showcase_item(rng, pid, title, price, original))
    return Showcase(HANDLE, items)


def _metrics(rng: random.Random, rank: int) -> dict[str, int | float]:
    scale = 1.0 / (1 + rank / 6)
    return {
        "comment": int(rng.uniform(300, 3000) * scale),
        "cost": int(rng.uniform(30_000, 60_000) * scale),
        "cpa": round(rng.uniform(2.5, 9.5), 2),
        "ctr": round(rng.uniform(0.8, 3.2), 2),
        "cvr": round(rng.uniform(2.0, 8.0), 2),
        "impression": int(rng.uniform(8e6, 25e6) * scale),
        "like": int(rng.uniform(20_000, 60_000) * scale),
        "play_six_rate": round(rng.uniform(5.0, 14.0), 2),
        "post": int(rng.uniform(6_000, 14_000) * scale),
        "post_change": round(rng.uniform(-0.2, 0.5), 2),
        "share": int(rng.uniform(300, 1200) * scale),
    }


def _cover(rng: random.Random, key: str) -> str | None:
    if rng.random() < 0.3:
        return None
    return f"https://p16-oec-va.ibyteimg.com/tos-maliva-i-o3syd03w52-us/cover-{key}.jpeg"


def _rankings(rng: random.Random) -> dict[str, Ranking]:
    beauty = [
        CategoryRow(_BEAUTY, _SECONDS[s], Category(tid, name, _SECONDS[s].id), name,
                    _cover(rng, tid), _metrics(rng, rank))
        for rank, (tid, name, s) in enumerate(_BEAUTY_ROWS, 1)
    ]  # fmt: skip
    out = {CATEGORY_ID: Ranking(CATEGORY_ID, beauty)}
    for first_id, (first_name, second_id, second_name, thirds) in _OTHER_RANKINGS.items():
        first = Category(first_id, first_name)
        second = Category(second_id, second_name, first_id)
        rows = []
        for rank, (tid, name) in enumerate(thirds, 1):
            third = Category(tid, name, second_id) if tid else None
            cover = _cover(rng, tid or second_id)
            rows.append(CategoryRow(first, second, third, name, cover, _metrics(rng, rank)))
        out[first_id] = Ranking(first_id, rows)
    return out


def demo_world(seed: int = DEFAULT_SEED) -> World:
    """The demo world at step 0, without a script (``scenarios.build_world`` adds one)."""
    rng = random.Random(seed)
    world = World(seed=seed)
    world.stores[STORE_URL] = _store(rng)
    world.showcases[HANDLE] = _showcase(rng)
    world.searches[QUERY] = _search(rng)
    world.rankings = _rankings(rng)
    return world


def showcase_addition(seed: int, product_id: str) -> Item:
    """One of the items the demo script adds to the showcase later (deterministic)."""
    rng = random.Random(f"{seed}:showcase:{product_id}")
    return _showcase_item(rng, product_id, *_SHOWCASE_LATER[product_id])


def holiday_set(seed: int) -> Item:
    """The product the demo script adds to the store at step 7."""
    title = "Goli Holiday Gift Set - ACV, Ashwagandha & Supergreens Gummies"
    return _key_item(random.Random(f"{seed}:store:7"), HOLIDAY_SET, title, "39.99", "49.99", _GOLI)
