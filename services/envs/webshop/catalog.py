"""The embedded WebShop catalog: products generated in the original file formats.

`generate_catalog(seed, n)` writes what WebShop reads from disk: a product list in the schema of
`items_shuffle*.json` (asin, name, full_description, small_description, pricing, images, query,
category, product_category, customization_options) and an attribute file in the schema of
`items_ins_v2*.json` (`{asin: {attributes, instruction, instruction_attributes}}`). The env then
loads them through the same code path as the real files (`products.py`), so the embedded and the
original backends differ only in where the files come from.

Products come from the five categories of the original (`category`: beauty, electronics, fashion,
food, garden), forty product types with the original's kind of queries, `›` breadcrumbs, option names
and values, attribute vocabularies and price ranges. Products of one type share a query and a head
noun and differ in brand, attributes, options and price, so a search finds several candidates and
the agent must read them. Everything is drawn from `random.Random` seeded with strings, so the
catalog is the same in every process whatever the hash seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from shared import labels

CATALOG_VERSION = "1"
"""Bump on any change to what the generator produces (it changes every panel)."""


@dataclass(frozen=True)
class ProductType:
    category: str
    query: str
    breadcrumb: str
    heads: tuple[str, ...]
    """Head nouns of titles, e.g. `Crew Neck T-Shirt`."""
    options: tuple[tuple[str, tuple[str, ...]], ...]
    """Option names as the original spells them (`Color`, `Size`, `Flavor Name`) and their value pool."""
    attributes: tuple[str, ...]
    price: tuple[float, float]
    uses: tuple[str, ...] = ()
    """`for ...` phrases some titles end with."""


def _t(
    category: str,
    query: str,
    breadcrumb: str,
    heads: str,
    options: dict[str, str],
    attributes: str,
    price: tuple[float, float],
    uses: str = "",
) -> ProductType:
    return ProductType(
        category=category,
        query=query,
        breadcrumb=breadcrumb,
        heads=tuple(h.strip() for h in heads.split("|")),
        options=tuple((name, tuple(v.strip() for v in values.split("|"))) for name, values in options.items()),
        attributes=tuple(a.strip() for a in attributes.split("|")),
        price=price,
        uses=tuple(u.strip() for u in uses.split("|") if u.strip()),
    )


BEAUTY = "Beauty & Personal Care"
FASHION = "Clothing, Shoes & Jewelry"
HOME = "Home & Kitchen"
GROCERY = "Grocery & Gourmet Food"

PRODUCT_TYPES: tuple[ProductType, ...] = (
    # beauty
    _t("beauty", "Shampoo & Conditioner", f"{BEAUTY} › Hair Care › Shampoo & Conditioner › Shampoos",
       "Shampoo | Clarifying Shampoo | Shampoo and Conditioner Set",
       {"Size": "8.4 Fl Oz (Pack of 1) | 16.9 Fl Oz (Pack of 1) | 8.4 Fl Oz (Pack of 2)",
        "Scent": "Coconut | Argan Oil | Tea Tree | Unscented"},
       "sulfate free | paraben free | cruelty free | natural ingredients | hair growth | dry hair | "
       "damaged hair | color treated", (8, 40), "Dry Hair | Curly Hair | Men and Women"),
    _t("beauty", "Lipstick", f"{BEAUTY} › Makeup › Lips › Lipstick",
       "Matte Lipstick | Liquid Lipstick | Lip Stain",
       {"Color": "Ruby Red | Nude Beige | Rose Pink | Berry Wine | Coral Crush"},
       "long lasting | cruelty free | highly pigmented | paraben free | easy apply | travel size", (6, 30)),
    _t("beauty", "Makeup Remover", f"{BEAUTY} › Skin Care › Face › Cleansers › Makeup Remover",
       "Micellar Cleansing Water | Makeup Remover Wipes | Cleansing Balm",
       {"Size": "3.4 Fl Oz | 6.8 Fl Oz | 13.5 Fl Oz"},
       "sensitive skin | fragrance free | oil free | dermatologist tested | natural ingredients | alcohol free",
       (5, 28), "Sensitive Skin | Waterproof Makeup"),
    _t("beauty", "Face Moisturizer", f"{BEAUTY} › Skin Care › Face › Creams & Moisturizers › Face Moisturizers",
       "Face Moisturizer | Night Cream | Hydrating Gel Cream",
       {"Size": "1.7 Ounce | 2.5 Ounce"},
       "hyaluronic acid | anti aging | fine lines | dry skin | non greasy | fragrance free | vitamin c",
       (12, 60), "Dry Skin | Oily Skin | All Skin Types"),
    _t("beauty", "Nail Polish", f"{BEAUTY} › Foot, Hand & Nail Care › Nail Art & Polish › Nail Polish",
       "Nail Polish Set | Gel Nail Polish | Quick Dry Nail Polish",
       {"Color": "Black | White | Navy Blue | Cherry Red | Pink Glitter | Lavender"},
       "long lasting | non toxic | quick dry | high gloss | easy remove | salon quality", (5, 35)),
    _t("beauty", "Hair Dryer", f"{BEAUTY} › Hair Care › Styling Tools & Appliances › Hair Dryers & Accessories › Hair Dryers",
       "Ionic Hair Dryer | Travel Hair Dryer | Hair Dryer Brush",
       {"Color": "Black | Rose Gold | White"},
       "fast drying | low noise | lightweight | frizz control | ceramic tourmaline | travel size", (25, 120)),
    _t("beauty", "Eyeshadow", f"{BEAUTY} › Makeup › Eyes › Eyeshadow",
       "Eyeshadow Palette | Shimmer Eyeshadow Palette | Matte Eyeshadow Palette",
       {"Style": "Warm Neutrals | Smoky Night | Sunset | Pastel Dream"},
       "highly pigmented | long lasting | cruelty free | easy blend | vegan | travel size", (8, 45)),
    _t("beauty", "Deodorant", f"{BEAUTY} › Personal Care › Deodorants & Antiperspirants › Deodorants",
       "Natural Deodorant | Deodorant Stick | Antiperspirant Deodorant",
       {"Scent": "Lavender | Citrus | Cedarwood | Unscented",
        "Size": "2.65 Ounce (Pack of 1) | 2.65 Ounce (Pack of 3)"},
       "aluminum free | baking soda free | sensitive skin | long lasting | natural ingredients", (6, 24),
       "Women | Men | Sensitive Skin"),
    # fashion
    _t("fashion", "Men's T-Shirts", f"{FASHION} › Men › Clothing › Shirts › T-Shirts",
       "Crew Neck T-Shirt | V-Neck T-Shirt | Henley Shirt",
       {"Color": "Black | White | Navy | Heather Gray | Olive Green",
        "Size": "Small | Medium | Large | X-Large | XX-Large"},
       "machine wash | short sleeve | cotton jersey | regular fit | moisture wicking | button closure", (10, 35)),
    _t("fashion", "Women's Dresses", f"{FASHION} › Women › Clothing › Dresses",
       "Maxi Dress | Midi Dress | Wrap Dress | Sundress",
       {"Color": "Black | Floral Blue | Wine Red | Dusty Pink | Green",
        "Size": "Small | Medium | Large | X-Large"},
       "hand wash | polyester spandex | long sleeve | short sleeve | elastic waist | button closure", (20, 60),
       "Summer | Party | Wedding Guest"),
    _t("fashion", "Women's Pumps", f"{FASHION} › Women › Shoes › Pumps",
       "Pointed Toe Pumps | Block Heel Pumps | Stiletto Pumps",
       {"Color": "Black | Nude | Red | Silver", "Size": "6 | 7 | 8 | 9 | 10"},
       "rubber sole | leather upper | non slip | comfortable fit | closed toe", (30, 90), "Party | Office | Wedding"),
    _t("fashion", "Men's Running Shoes", f"{FASHION} › Men › Shoes › Athletic › Running",
       "Running Shoes | Trail Running Shoes | Walking Sneakers",
       {"Color": "Black White | Gray | Navy | Red", "Size": "8 | 9 | 10 | 11 | 12"},
       "rubber sole | lightweight | breathable mesh | non slip | lace up | memory foam", (35, 120),
       "Gym | Tennis | Walking"),
    _t("fashion", "Women's Leggings", f"{FASHION} › Women › Clothing › Active › Leggings",
       "High Waist Yoga Leggings | Capri Leggings | Fleece Lined Leggings",
       {"Color": "Black | Charcoal | Navy | Burgundy", "Size": "Small | Medium | Large"},
       "high waist | tummy control | moisture wicking | four way stretch | pull on closure | machine wash",
       (12, 40), "Yoga | Workout | Running"),
    _t("fashion", "Men's Shorts", f"{FASHION} › Men › Clothing › Shorts",
       "Cargo Shorts | Athletic Shorts | Chino Shorts",
       {"Color": "Khaki | Black | Navy | Olive", "Size": "30 | 32 | 34 | 36"},
       "elastic waist | drawstring closure | quick dry | machine wash | relaxed fit | with pockets", (15, 45)),
    _t("fashion", "Wallets", f"{FASHION} › Men › Accessories › Wallets, Card Cases & Money Organizers › Wallets",
       "Bifold Wallet | Slim Card Holder | Trifold Wallet",
       {"Color": "Black | Brown | Tan"},
       "genuine leather | rfid blocking | slim design | gift box | multiple card slots", (12, 50)),
    _t("fashion", "Women's Sweaters", f"{FASHION} › Women › Clothing › Sweaters",
       "Cardigan Sweater | Turtleneck Sweater | Oversized Pullover Sweater",
       {"Color": "Cream | Camel | Black | Sage Green", "Size": "Small | Medium | Large | X-Large"},
       "long sleeve | soft knit | loose fit | hand wash | button front", (25, 60)),
    # electronics
    _t("electronics", "Wireless Earbuds", "Electronics › Headphones, Earbuds & Accessories › Headphones & Earbuds › Earbud Headphones",
       "Wireless Earbuds | Bluetooth Earbuds | Sport Earbuds",
       {"Color": "Black | White | Blue"},
       "noise cancelling | long battery life | water resistant | charging case | hands free | fast charging",
       (20, 90), "iPhone and Android | Running | Work"),
    _t("electronics", "Phone Case", "Cell Phones & Accessories › Cases, Holsters & Sleeves › Basic Cases",
       "Phone Case | Clear Phone Case | Wallet Phone Case",
       {"Color": "Black | Clear | Purple | Green", "Style": "iPhone 13 | iPhone 14 | Galaxy S22"},
       "shockproof | wireless charging | slim fit | card holder | drop protection", (8, 25)),
    _t("electronics", "USB C Cable", "Electronics › Computers & Accessories › Computer Accessories & Peripherals › Cables & Accessories › Cables › USB Cables",
       "USB C Cable | USB C to USB C Cable | Braided Charging Cable",
       {"Size": "3 ft | 6 ft | 10 ft", "Item Package Quantity": "1 | 2 | 3"},
       "fast charging | nylon braided | high speed | durable | data transfer", (6, 20)),
    _t("electronics", "Portable Charger", "Cell Phones & Accessories › Chargers & Power Adapters › Portable Power Banks",
       "Portable Charger | Power Bank | Solar Power Bank",
       {"Color": "Black | White", "Size": "10000mAh | 20000mAh | 26800mAh"},
       "fast charging | usb c | led display | compact size | high capacity", (18, 60)),
    _t("electronics", "Bluetooth Speaker", "Electronics › Portable Audio & Video › Portable Speakers & Docks › Portable Bluetooth Speakers",
       "Bluetooth Speaker | Waterproof Speaker | Mini Speaker",
       {"Color": "Black | Blue | Red | Camo"},
       "waterproof | long battery life | stereo sound | built in microphone | portable", (20, 100),
       "Outdoor | Shower | Party"),
    _t("electronics", "HDMI Cable", "Electronics › Accessories & Supplies › Audio & Video Accessories › Cables › HDMI Cables",
       "HDMI Cable | 4K HDMI Cable | High Speed HDMI Cable",
       {"Size": "3 Feet | 6 Feet | 10 Feet | 15 Feet"},
       "high speed | gold plated | 4k | ethernet | durable", (7, 22)),
    _t("electronics", "Computer Mouse", "Electronics › Computers & Accessories › Computer Accessories & Peripherals › Keyboards, Mice & Accessories › Mice",
       "Wireless Mouse | Ergonomic Mouse | Gaming Mouse",
       {"Color": "Black | Gray | Pink | White"},
       "wireless | usb receiver | ergonomic design | silent click | rechargeable battery | adjustable dpi",
       (10, 60), "Laptop | PC | Mac"),
    _t("electronics", "Smart Watch", "Electronics › Wearable Technology › Smartwatches",
       "Smart Watch | Fitness Tracker Watch | Kids Smart Watch",
       {"Color": "Black | Silver | Rose Gold"},
       "heart rate | sleep monitor | water resistant | step counter | long battery life", (30, 150)),
    # food
    _t("food", "Snack Bars", f"{GROCERY} › Snacks & Sweets › Snack Foods › Bars › Protein Bars",
       "Protein Bars | Granola Bars | Nut Bars",
       {"Flavor Name": "Chocolate Peanut Butter | Almond | Mixed Berry | Salted Caramel",
        "Size": "12 Count | 24 Count"},
       "gluten free | non gmo | high protein | low sugar | plant based | kosher", (10, 35)),
    _t("food", "Coffee", f"{GROCERY} › Beverages › Coffee, Tea & Cocoa › Coffee › Ground Coffee",
       "Ground Coffee | Whole Bean Coffee | Cold Brew Coffee",
       {"Flavor Name": "Medium Roast | Dark Roast | French Vanilla | Hazelnut", "Size": "12 Ounce | 2 Pound"},
       "organic | fair trade | single origin | non gmo | kosher | low acid", (9, 40)),
    _t("food", "Green Tea", f"{GROCERY} › Beverages › Coffee, Tea & Cocoa › Tea › Green Tea",
       "Green Tea Bags | Matcha Green Tea Powder | Jasmine Green Tea",
       {"Flavor Name": "Original | Jasmine | Mint | Lemon Ginger",
        "Size": "20 Count (Pack of 1) | 20 Count (Pack of 6)"},
       "organic | non gmo | sugar free | gluten free | kosher | natural ingredients", (5, 30)),
    _t("food", "Potato Chips", f"{GROCERY} › Snacks & Sweets › Chips & Crisps › Potato Chips",
       "Kettle Cooked Potato Chips | Potato Chips | Baked Potato Crisps",
       {"Flavor Name": "Sea Salt | Salt and Vinegar | Barbecue | Jalapeno",
        "Size": "1 Ounce (Pack of 24) | 5 Ounce (Pack of 8)"},
       "gluten free | non gmo | vegan | no artificial flavors | kosher", (8, 30)),
    _t("food", "Olive Oil", f"{GROCERY} › Pantry Staples › Cooking Oils, Vinegars & Sprays › Oils › Olive Oil",
       "Extra Virgin Olive Oil | Olive Oil Spray | Cold Pressed Olive Oil",
       {"Size": "16.9 Fl Oz | 33.8 Fl Oz | 101 Fl Oz"},
       "cold pressed | organic | non gmo | kosher | glass bottle | low acidity", (10, 45)),
    _t("food", "Gummy Candy", f"{GROCERY} › Snacks & Sweets › Candy & Chocolate › Gummy Candy",
       "Gummy Bears | Sour Gummy Worms | Fruit Gummies",
       {"Flavor Name": "Assorted Fruit | Sour Mix | Peach | Strawberry", "Size": "2 Pound | 5 Pound"},
       "fat free | gluten free | vegan | individually wrapped | natural flavors", (6, 25)),
    _t("food", "Pasta", f"{GROCERY} › Pantry Staples › Pasta & Noodles › Pasta",
       "Spaghetti Pasta | Penne Pasta | Chickpea Pasta",
       {"Size": "16 Ounce (Pack of 4) | 12 Ounce (Pack of 6)"},
       "gluten free | high protein | non gmo | organic | whole grain | vegan", (8, 30)),
    _t("food", "Hot Sauce", f"{GROCERY} › Condiments & Salad Dressings › Hot Sauce",
       "Hot Sauce | Habanero Hot Sauce | Sriracha Sauce",
       {"Flavor Name": "Original | Garlic | Extra Hot | Smoky Chipotle",
        "Size": "5 Fl Oz (Pack of 1) | 5 Fl Oz (Pack of 3)"},
       "gluten free | low sodium | no preservatives | vegan | keto friendly", (5, 25)),
    # garden (home, kitchen, furniture)
    _t("garden", "Console tables", f"{HOME} › Furniture › Living Room Furniture › Tables › Sofa & Console Tables",
       "Console Table | Sofa Table | Entryway Table",
       {"Color": "Black | Walnut | White | Rustic Brown"},
       "solid wood | easy assemble | storage shelf | metal frame | living room", (80, 400), "Entryway | Living Room | Hallway"),
    _t("garden", "Throw Pillow Covers", f"{HOME} › Bedding › Decorative Pillows, Inserts & Covers › Throw Pillow Covers",
       "Throw Pillow Covers | Velvet Pillow Covers | Linen Cushion Covers",
       {"Color": "Navy Blue | Mustard Yellow | Sage Green | Cream", "Size": "18 x 18 Inch | 20 x 20 Inch"},
       "hidden zipper | machine washable | set of 2 | soft velvet | living room", (9, 30), "Couch | Sofa | Bed"),
    _t("garden", "Wall art", f"{HOME} › Wall Art › Posters & Prints",
       "Canvas Wall Art | Framed Wall Art | Abstract Wall Art",
       {"Size": "12 x 16 Inch | 16 x 24 Inch | 24 x 36 Inch"},
       "ready to hang | living room | bedroom | high definition | wood frame", (20, 120), "Living Room | Bedroom | Office"),
    _t("garden", "Bed Sheets", f"{HOME} › Bedding › Sheets & Pillowcases › Sheet & Pillowcase Sets",
       "Bed Sheet Set | Microfiber Sheet Set | Cotton Sheet Set",
       {"Color": "White | Gray | Navy | Sage", "Size": "Twin | Full | Queen | King"},
       "deep pocket | machine washable | wrinkle free | breathable | soft", (25, 90)),
    _t("garden", "Office Chair", f"{HOME} › Furniture › Home Office Furniture › Home Office Chairs › Home Office Desk Chairs",
       "Office Chair | Ergonomic Desk Chair | Mesh Office Chair",
       {"Color": "Black | Gray | White"},
       "lumbar support | adjustable height | easy assemble | heavy duty | high back", (60, 250), "Home Office | Gaming"),
    _t("garden", "Coffee Mugs", f"{HOME} › Kitchen & Dining › Dining & Entertaining › Cups, Mugs & Saucers › Mugs",
       "Coffee Mug | Ceramic Coffee Mug Set | Travel Mug",
       {"Color": "White | Black | Blue | Speckled", "Size": "12 Oz | 16 Oz"},
       "dishwasher safe | microwave safe | lead free | gift box | large handle", (10, 40)),
    _t("garden", "Storage Baskets", f"{HOME} › Storage & Organization › Baskets, Bins & Containers › Storage Baskets",
       "Storage Basket | Woven Storage Bin | Cotton Rope Basket",
       {"Color": "Natural | Gray | White", "Size": "Small | Medium | Large"},
       "foldable | with handles | living room | nursery | machine washable", (12, 40), "Toys | Blankets | Laundry"),
    _t("garden", "Table Lamp", "Tools & Home Improvement › Lighting & Ceiling Fans › Lamps & Shades › Table Lamps",
       "Table Lamp | Bedside Lamp | Touch Control Lamp",
       {"Color": "Black | Brass | White"},
       "usb port | dimmable | bedroom | living room | led bulb included", (20, 90), "Bedroom | Living Room | Nightstand"),
)  # fmt: skip

CATEGORIES = labels.CATEGORIES
assert set(CATEGORIES) == {t.category for t in PRODUCT_TYPES}, "shared.labels.CATEGORIES names every category"

_SYLLABLES = ("lu", "mo", "ra", "ve", "ka", "zen", "tri", "no", "vi", "sol", "ba", "qu", "ori", "pel", "dex", "ny")
_BRAND_TAILS = ("", "", "", " Co", " Home", " Labs", " Studio", " Essentials")
_ASIN_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_DESCRIPTION_OPENERS = (
    "Shopping for {query}? Made for everyday use, this {head} is {a} and {b}.",
    "Our {head} combines {a} with {b}, the way {query} should be.",
    "Designed with care among {query}: a {a} {head} that stays {b}.",
    "The {head} you reach for every day, {a} and {b}: {query} done right.",
)
_DESCRIPTION_CLOSERS = (
    "Satisfaction guaranteed or your money back.",
    "Backed by our friendly customer service team.",
    "A thoughtful gift for friends and family.",
    "Carefully packed and shipped fast.",
)
_BULLET_TEMPLATES = (
    "{A}: crafted to be {a} from the first use",
    "{A} - tested by our team so you can rely on it",
    "{A}: one less thing to worry about",
    "Why {a}? Because quality is in the details",
)
_INSTRUCTIONS = (
    "i am looking for {a}{head} that is {attrs}",
    "i need {a}{attrs} {head}",
    "find me {a}{head} with {attrs}",
    "i want to buy {a}{head} that is {attrs}",
    "i'm looking for {a}{attrs} {head}",
)


def _brand(rng: random.Random) -> str:
    word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    return word.capitalize() + rng.choice(_BRAND_TAILS)


def _asin(rng: random.Random, taken: set[str]) -> str:
    while True:
        asin = "B0" + "".join(rng.choice(_ASIN_CHARS) for _ in range(8))
        if asin not in taken:
            taken.add(asin)
            return asin


def _joined(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _title(rng: random.Random, kind: ProductType, brand: str, head: str, attributes: list[str]) -> str:
    shown = [a.title() for a in attributes[: rng.randint(1, 2)]]
    style = rng.randrange(3)
    if style == 0:
        title = f"{brand} {head} - {', '.join(shown)}"
    elif style == 1:
        title = f"{brand} {shown[0]} {head}"
    else:
        title = f"{head} by {brand}, {_joined(shown)}"
    if kind.uses and rng.random() < 0.5:
        title += f" for {rng.choice(kind.uses)}"
    return title


def _pricing(rng: random.Random, kind: ProductType) -> str:
    low, high = kind.price
    price = round(rng.uniform(low, high), 2)
    cents = rng.choice((0.99, 0.95, 0.49, None))
    if cents is not None:
        price = int(price) + cents
    if rng.random() < 0.15:
        top = round(price * rng.uniform(1.1, 1.6), 2)
        return f"${price:.2f} - ${top:.2f}"
    if rng.random() < 0.03:
        return ""  # the original has products without a price (shown as $100.0)
    return f"${price:.2f}"


def _options(rng: random.Random, kind: ProductType) -> dict[str, Any] | str:
    if not kind.options:
        return ""
    if rng.random() < 0.08:
        return rng.choice(("", {"Color": None}))  # no options, in both spellings the original has
    options: dict[str, Any] = {}
    names = list(kind.options)
    if len(names) > 1 and rng.random() < 0.25:
        names = [rng.choice(names)]
    for name, pool in names:
        count = rng.randint(2, min(4, len(pool)))
        values = sorted(rng.sample(pool, count), key=pool.index)
        options[name] = [{"value": v, "image": None} for v in values]
    return options


def _product(rng: random.Random, kind: ProductType, asin: str) -> tuple[dict[str, Any], dict[str, Any]]:
    brand = _brand(rng)
    head = rng.choice(kind.heads)
    attributes = rng.sample(kind.attributes, rng.randint(2, min(6, len(kind.attributes))))
    wanted = attributes[: rng.randint(1, min(3, len(attributes)))]
    a, b = attributes[0], attributes[1]
    description = " ".join(
        (
            rng.choice(_DESCRIPTION_OPENERS).format(head=head.lower(), a=a, b=b, query=kind.query.lower()),
            rng.choice(_DESCRIPTION_CLOSERS),
        )
    )
    bullets = [rng.choice(_BULLET_TEMPLATES).format(A=x.upper(), a=x) for x in attributes[: rng.randint(2, 5)]]
    raw = {
        "asin": asin,
        "name": _title(rng, kind, brand, head, attributes),
        "full_description": description,
        "small_description": bullets,
        "pricing": _pricing(rng, kind),
        "images": [f"https://images.example/{asin}.jpg"],
        "query": kind.query,
        "category": kind.category,
        "product_category": kind.breadcrumb,
        "customization_options": _options(rng, kind),
        "brand": f"Brand: {brand}",
    }
    plural = head.endswith("s") and not head.endswith("ss")
    article = "" if plural else "a "
    instruction = rng.choice(_INSTRUCTIONS).format(a=article, head=head.lower(), attrs=_joined(wanted))
    attrs = {"attributes": attributes, "instruction": instruction, "instruction_attributes": wanted}
    return raw, attrs


def generate_catalog(seed: int = 0, n_products: int = 1000) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """`(items, attributes)` in the formats of `items_shuffle*.json` and `items_ins_v2*.json`.

    Product types take turns, so every category is represented whatever `n_products` is; the list is
    then shuffled, as the original's `items_shuffle` is.
    """
    if n_products < 1:
        raise ValueError(f"n_products must be at least 1, not {n_products}")
    rng = random.Random(f"webshop-catalog-{CATALOG_VERSION}-{seed}")
    taken: set[str] = set()
    items: list[dict[str, Any]] = []
    attributes: dict[str, dict[str, Any]] = {}
    for i in range(n_products):
        kind = PRODUCT_TYPES[i % len(PRODUCT_TYPES)]
        raw, attrs = _product(rng, kind, _asin(rng, taken))
        items.append(raw)
        attributes[raw["asin"]] = attrs
    rng.shuffle(items)
    return items, attributes
