"""Synthetic click CSVs in the exact OpenCDP / REES46 schema.

The real October 2019 file is not reachable from the development machines, so
this module generates files that look like it (same columns, formats and
rough marginals) and, more importantly, carry a *learnable* structure: a
recommender that models the individual user must beat a popularity baseline.

The generative story
--------------------
1. **Catalog.** A fixed tree of a few dozen categories with the real dotted
   codes (``electronics.smartphone``, ``appliances.kitchen.washer`` ...), plus
   some categories that exist but have no code (their rows get a blank
   ``category_code``, about 30% of all rows as in the real file). Each category
   has a traffic weight, a price level and a family of brands; every brand has
   a price tier (budget / mid / premium). Products are spread over the
   categories; within a category their popularity is Zipf-like, their brand is
   drawn by brand popularity (a stratified ~15% of products have no brand),
   and their price is log-normal around ``category level x brand tier``.
2. **Users.** Each user has a persistent taste: 1-3 favourite categories with
   weights, a preferred brand in each favourite category and a preferred price
   tier. Their activity (sessions per day) is log-normal across users, so a few
   users are heavy and many come back only now and then.
3. **Sessions.** Every day each user opens a Poisson number of sessions, each
   starting at an hour drawn from a daily rhythm (quiet UTC night, afternoon /
   evening peak). A session focuses on one favourite category; its views
   (geometric length, seconds to minutes apart) mostly stay there, some go to
   other favourites and some explore the whole catalog. Inside a category the
   product is drawn by popularity, or by the user's preferred brand or tier.
4. **Funnel.** A view turns into a cart (a few seconds later) with a
   probability that grows with taste match (favourite category, preferred
   brand, preferred tier); a cart turns into a purchase (minutes later) with a
   probability that again favours matching products. A few purchases happen
   without a cart. Rates are calibrated per day so the file's overall shares
   land near the real ones (96% views, 2.2% carts, 1.75% purchases).
5. **Bots.** A few users are bots: on some days they fire one view every
   1-3 seconds for 5-30 minutes at uniformly random products.

The file is produced day by day (bounded memory), every step is vectorized
with numpy, and the text is written by the pyarrow CSV writer. Randomness comes
from per-purpose / per-day streams of one seed, so the same `SynthConfig`
always yields a byte-identical file.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm import tqdm

from producer.events import CSV_COLUMNS, EventType

logger = logging.getLogger(__name__)

__all__ = [
    "EVENT_TYPES",
    "Catalog",
    "DayEvents",
    "GroupSampler",
    "Population",
    "SynthConfig",
    "SynthSummary",
    "build_catalog",
    "build_population",
    "events_to_table",
    "generate_day",
    "session_uuids",
    "write_synthetic_csv",
]

# --------------------------------------------------------------------------- #
# Static description of the shop
# --------------------------------------------------------------------------- #

#: Event type codes used in the numpy columns (index -> `EventType`).
EVENT_TYPES: tuple[EventType, ...] = (
    EventType.VIEW,
    EventType.CART,
    EventType.REMOVE_FROM_CART,
    EventType.PURCHASE,
)
VIEW, CART, REMOVE, PURCHASE = range(4)

#: Price multiplier of the three brand tiers (budget, mid, premium).
TIER_PRICE = np.array([0.6, 1.0, 1.8])
NO_TIER_MIX = np.array([0.6, 0.3, 0.1])  # tier of products without a brand

#: Brand -> tier (0 budget, 1 mid, 2 premium). One tier per name across categories.
BRAND_TIERS: dict[str, int] = {
    # phones and electronics
    "apple": 2, "samsung": 1, "xiaomi": 0, "huawei": 1, "oppo": 0, "vivo": 0, "nokia": 0,
    "honor": 0, "meizu": 0, "sony": 2, "oneplus": 1, "realme": 0, "lg": 1, "jbl": 1,
    "pioneer": 1, "casio": 0, "philips": 1, "panasonic": 1, "garmin": 2, "haier": 0,
    "artel": 0, "supra": 0, "bbk": 0, "hyundai": 0, "harman": 2, "marshall": 2, "texet": 0,
    # appliances
    "bosch": 2, "elenberg": 0, "redmond": 0, "polaris": 0, "vitek": 0, "tefal": 1, "braun": 1,
    "indesit": 0, "beko": 0, "electrolux": 1, "miele": 2, "kenwood": 1, "delonghi": 2,
    "gorenje": 1, "zanussi": 1, "dyson": 2, "scarlett": 0,
    # computers
    "lenovo": 1, "hp": 1, "acer": 0, "asus": 1, "dell": 1, "msi": 2, "pulser": 0,
    "gigabyte": 1, "logitech": 1, "canon": 1, "epson": 1, "aoc": 0, "benq": 1,
    "kingston": 0, "seagate": 0, "wd": 1, "razer": 2,
    # apparel
    "nike": 2, "adidas": 2, "puma": 1, "baden": 1, "rieker": 1, "reebok": 1, "skechers": 1,
    "respect": 1, "ecco": 2, "crocs": 0, "joma": 0, "kari": 0, "tamaris": 1, "demix": 0,
    # furniture
    "brw": 0, "ikea": 1, "askona": 2, "sv": 0, "lorena": 1, "triangle": 0, "dauscher": 1,
    "mebelson": 0, "stolline": 1, "hoff": 1, "ormatek": 2, "shatura": 1,
    # auto
    "starline": 1, "sho-me": 0, "prology": 0, "pandora": 2, "alpine": 2, "jvc": 0,
    "mystery": 0, "neoline": 1, "cordiant": 0, "nokian": 2, "michelin": 2, "continental": 2,
    "tunga": 0, "viatti": 0,
    # construction
    "makita": 2, "dewalt": 2, "stihl": 2, "zubr": 0, "patriot": 0, "huter": 0,
    "champion": 0, "sturm": 0, "resanta": 0, "metabo": 2, "ryobi": 1, "elitech": 0,
    # kids and sport
    "lucente": 1, "chicco": 2, "peg-perego": 2, "lego": 2, "hasbro": 1, "mattel": 1,
    "happy-baby": 0, "cybex": 2, "tutis": 1, "carrello": 0, "joie": 1,
    "stels": 0, "forward": 1, "stern": 0, "merida": 2, "giant": 2, "cube": 2, "trek": 2,
    "novatrack": 0, "torneo": 0, "larsen": 1,
    # accessories
    "samsonite": 2, "rivacase": 0, "ricardo": 1, "tommy": 1, "guess": 2, "michael-kors": 2,
    "eastpak": 1, "tigernu": 0, "wenger": 1,
    # beauty, home and the rest
    "shiseido": 2, "creed": 2, "chanel": 2, "dior": 2, "loreal": 1, "maybelline": 0,
    "nivea": 0, "estel": 0, "garnier": 0, "vichy": 1, "lancome": 2, "kapous": 0,
    "clinique": 1, "nyx": 0, "luminarc": 0, "bergner": 0, "zwilling": 2, "fissman": 1,
    "rondell": 1, "pyrex": 1, "villeroy-boch": 2, "kitchenaid": 2, "attribute": 0,
    "moulinex": 1, "lock-lock": 0, "royal-canin": 2, "purina": 1, "whiskas": 0,
    "pedigree": 0, "hills": 2, "acana": 2, "gardena": 2, "grinda": 0, "palisad": 0,
    "karcher": 2, "erich-krause": 0, "brauberg": 0, "faber-castell": 2, "parker": 2,
    "pilot": 1, "stabilo": 1, "sokolov": 1, "swarovski": 2, "sunlight": 0, "adamas": 1,
    "optimum": 1, "bombbar": 0, "maxler": 1, "myprotein": 1, "scitec": 1,
}  # fmt: skip

#: Brand families, most popular brand first (a category draws its brands from one family).
BRAND_FAMILIES: dict[str, tuple[str, ...]] = {
    "phones": ("samsung", "apple", "xiaomi", "huawei", "oppo", "vivo", "nokia", "honor", "meizu",
               "oneplus", "realme", "sony"),
    "electronics": ("samsung", "apple", "xiaomi", "sony", "lg", "jbl", "pioneer", "casio", "philips",
                    "panasonic", "huawei", "garmin", "haier", "artel", "supra", "bbk", "hyundai",
                    "harman", "marshall", "texet"),
    "appliances": ("samsung", "bosch", "lg", "elenberg", "redmond", "polaris", "vitek", "philips",
                   "tefal", "braun", "indesit", "beko", "haier", "artel", "electrolux", "miele",
                   "kenwood", "delonghi", "gorenje", "zanussi", "dyson", "scarlett"),
    "computers": ("lenovo", "hp", "acer", "asus", "apple", "dell", "msi", "pulser", "gigabyte",
                  "logitech", "canon", "epson", "aoc", "benq", "kingston", "seagate", "wd", "razer"),
    "apparel": ("nike", "adidas", "baden", "puma", "rieker", "reebok", "skechers", "respect", "ecco",
                "crocs", "joma", "kari", "tamaris", "demix"),
    "furniture": ("brw", "sv", "triangle", "dauscher", "ikea", "askona", "lorena", "mebelson",
                  "stolline", "hoff", "ormatek", "shatura"),
    "auto": ("starline", "pioneer", "sho-me", "prology", "pandora", "alpine", "kenwood", "jvc",
             "mystery", "neoline"),
    "tyres": ("cordiant", "nokian", "michelin", "continental", "tunga", "viatti"),
    "construction": ("bosch", "makita", "dewalt", "stihl", "zubr", "patriot", "huter", "champion",
                     "sturm", "resanta", "metabo", "ryobi", "elitech"),
    "kids": ("lucente", "chicco", "peg-perego", "lego", "hasbro", "mattel", "happy-baby", "cybex",
             "tutis", "carrello", "joie"),
    "sport": ("stels", "forward", "stern", "merida", "giant", "cube", "trek", "novatrack", "torneo",
              "larsen"),
    "accessories": ("samsonite", "xiaomi", "rivacase", "ricardo", "tommy", "guess", "michael-kors",
                    "eastpak", "tigernu", "wenger"),
    "beauty": ("shiseido", "creed", "chanel", "dior", "loreal", "maybelline", "nivea", "estel",
               "garnier", "vichy", "lancome", "kapous", "clinique", "nyx"),
    "home": ("luminarc", "tefal", "bergner", "zwilling", "fissman", "rondell", "pyrex",
             "villeroy-boch", "kitchenaid", "attribute", "moulinex", "lock-lock"),
    "pets": ("royal-canin", "purina", "whiskas", "pedigree", "hills", "acana"),
    "garden": ("gardena", "grinda", "palisad", "patriot", "champion", "karcher"),
    "stationery": ("erich-krause", "brauberg", "faber-castell", "parker", "pilot", "stabilo"),
    "jewelry": ("sokolov", "pandora", "swarovski", "sunlight", "adamas"),
    "nutrition": ("optimum", "bombbar", "maxler", "myprotein", "scitec"),
}  # fmt: skip


@dataclass(frozen=True)
class CategorySpec:
    """One leaf category: its dotted code (None = blank in the file), traffic weight, price level, brand family."""

    name: str  # the code, or an internal label for uncoded categories (never written)
    coded: bool
    weight: float  # relative share of traffic
    price: float  # median price (USD) of a mid-tier product
    family: str


def _c(code: str, weight: float, price: float, family: str) -> CategorySpec:
    return CategorySpec(code, True, weight, price, family)


def _u(label: str, weight: float, price: float, family: str) -> CategorySpec:
    return CategorySpec(label, False, weight, price, family)


#: The category tree. Weights roughly follow the real file's head; the uncoded
#: categories carry ~30% of the weight so ~30% of rows have a blank category_code.
CATEGORIES: tuple[CategorySpec, ...] = (
    _c("electronics.smartphone", 20.0, 280, "phones"),
    _c("electronics.clocks", 3.2, 150, "electronics"),
    _c("computers.notebook", 3.2, 520, "computers"),
    _c("electronics.audio.headphone", 2.3, 60, "electronics"),
    _c("appliances.kitchen.refrigerators", 1.9, 480, "appliances"),
    _c("appliances.environment.vacuum", 1.6, 140, "appliances"),
    _c("appliances.environment.air_heater", 1.4, 50, "appliances"),
    _c("electronics.video.tv", 1.4, 390, "electronics"),
    _c("auto.accessories.player", 1.4, 60, "auto"),
    _c("apparel.shoes", 1.3, 75, "apparel"),
    _c("appliances.kitchen.washer", 1.3, 310, "appliances"),
    _c("apparel.shoes.keds", 1.1, 70, "apparel"),
    _c("electronics.telephone", 1.0, 30, "electronics"),
    _c("furniture.living_room.cabinet", 0.8, 180, "furniture"),
    _c("auto.accessories.alarm", 0.8, 110, "auto"),
    _c("appliances.kitchen.meat_grinder", 0.7, 70, "appliances"),
    _c("furniture.living_room.sofa", 0.7, 480, "furniture"),
    _c("computers.desktop", 0.7, 650, "computers"),
    _c("furniture.bedroom.bed", 0.65, 230, "furniture"),
    _c("accessories.bag", 0.6, 45, "accessories"),
    _c("appliances.kitchen.microwave", 0.55, 90, "appliances"),
    _c("appliances.environment.water_heater", 0.5, 120, "appliances"),
    _c("electronics.audio.subwoofer", 0.5, 120, "electronics"),
    _c("appliances.iron", 0.5, 40, "appliances"),
    _c("appliances.kitchen.blender", 0.5, 45, "appliances"),
    _c("sport.bicycle", 0.5, 260, "sport"),
    _c("kids.carriage", 0.45, 240, "kids"),
    _c("construction.tools.drill", 0.45, 90, "construction"),
    _c("auto.accessories.videoregister", 0.45, 70, "auto"),
    _c("electronics.tablet", 0.4, 260, "electronics"),
    _c("appliances.environment.air_conditioner", 0.4, 420, "appliances"),
    _c("construction.tools.saw", 0.4, 110, "construction"),
    _c("appliances.kitchen.oven", 0.35, 260, "appliances"),
    _c("computers.components.videocards", 0.35, 330, "computers"),
    _c("appliances.sewing_machine", 0.35, 150, "appliances"),
    _c("appliances.kitchen.kettle", 0.33, 30, "appliances"),
    _c("appliances.kitchen.hood", 0.3, 150, "appliances"),
    _c("computers.peripherals.monitor", 0.27, 190, "computers"),
    _c("furniture.kitchen.table", 0.27, 120, "furniture"),
    _c("appliances.kitchen.dishwasher", 0.2, 380, "appliances"),
    _c("kids.toys", 0.2, 30, "kids"),
    _c("computers.peripherals.printer", 0.2, 150, "computers"),
    _c("furniture.living_room.chair", 0.18, 90, "furniture"),
    _c("apparel.shoes.sandals", 0.16, 50, "apparel"),
    _c("appliances.personal.hair_cutter", 0.15, 35, "appliances"),
    _c("computers.peripherals.mouse", 0.15, 20, "computers"),
    _c("electronics.audio.acoustic", 0.14, 90, "electronics"),
    _c("construction.tools.generator", 0.14, 400, "construction"),
    # Categories without a code (blank category_code in the file).
    _u("beauty.perfume", 4.35, 60, "beauty"),
    _u("beauty.cosmetics", 3.48, 25, "beauty"),
    _u("home.dishes", 2.61, 25, "home"),
    _u("auto.tyres", 2.61, 70, "tyres"),
    _u("home.textile", 1.74, 30, "home"),
    _u("kids.clothes", 1.74, 20, "kids"),
    _u("pets.food", 1.39, 25, "pets"),
    _u("garden.tools", 1.3, 80, "garden"),
    _u("stationery", 1.13, 8, "stationery"),
    _u("jewelry", 1.13, 120, "jewelry"),
    _u("sport.nutrition", 0.87, 30, "nutrition"),
    _u("home.lighting", 0.87, 40, "home"),
    _u("construction.materials", 0.78, 20, "construction"),
    _u("auto.parts", 0.7, 35, "auto"),
)  # fmt: skip

#: Relative session starts per UTC hour: quiet UTC night, evening peak (the real shop is in UTC+3).
HOURLY_RHYTHM = np.array(
    [0.55, 0.8, 1.2, 1.6, 1.9, 2.1, 2.2, 2.25, 2.3, 2.3, 2.3, 2.35,
     2.45, 2.6, 2.8, 2.95, 3.0, 2.9, 2.5, 1.9, 1.3, 0.8, 0.45, 0.35]
)  # fmt: skip
#: Activity multiplier per weekday (Monday first).
WEEKDAY_RHYTHM = np.array([0.98, 0.97, 0.98, 1.0, 1.02, 1.04, 1.01])

# Independent random streams (same seed -> same catalog whatever the number of days, etc.).
_STREAM_CATALOG, _STREAM_USERS, _STREAM_DAY = 1, 2, 3

_USER_ID_MIN, _USER_ID_SPAN = 500_000_000, 99_999_999  # 9-digit ids 5xxxxxxxx
_PRODUCT_ID_MIN, _PRODUCT_ID_MAX = 1_000_000, 60_000_000


# --------------------------------------------------------------------------- #
# Configuration and summary
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """Knobs of the generator. The defaults reproduce the real file's marginals.

    Shares (`cart_share`, `purchase_share`, `remove_share`) are fractions of
    all rows in the file, bots included.
    """

    users: int = 10_000  #: size of the user population (not all of them need to be active)
    days: int = 7  #: number of days, starting at `start` (00:00 UTC)
    seed: int = 42
    start: date = date(2019, 10, 1)
    products: int | None = None  #: catalog size; default max(200, users // 2)
    bot_share: float = 0.001  #: share of users that are bots (at least 1 when users >= 100)

    sessions_per_user_day: float = 0.75  #: mean sessions per user and day
    activity_sigma: float = 1.0  #: log-normal spread of user activity (heavy tail)
    views_per_session: float = 4.25  #: mean of the geometric number of views per session
    session_focus: float = 0.75  #: share of a session's views in the session's main category
    explore: float = 0.1  #: share of views in a category drawn from the whole catalog
    brand_loyalty: float = 0.35  #: in a favourite category: share of views on the preferred brand
    tier_loyalty: float = 0.5  #: otherwise: share of views restricted to the preferred price tier
    revisit: float = 0.12  #: probability that a view repeats the session's previous product
    zipf_exponent: float = 1.0  #: product popularity ~ 1 / rank**zipf_exponent within a category
    unbranded_share: float = 0.165  #: share of products without a brand (~14% of rows)

    cart_share: float = 0.022
    purchase_share: float = 0.0175
    direct_purchase_share: float = 0.05  #: share of purchases without a cart in the session
    #: remove_from_cart rows (the real October file has none); they come from carts that are
    #: not bought, so keep it below cart_share - (1 - direct_purchase_share) * purchase_share
    remove_share: float = 0.0
    #: probability that a cart row is written twice, same second (the real file has such rows);
    #: the repeats count towards cart_share
    duplicate_cart_share: float = 0.0

    bot_active_day_prob: float = 0.15  #: chance a bot is active on a day (each bot has >= 1 active day)
    bot_burst_minutes: tuple[float, float] = (5.0, 30.0)  #: duration range of a bot's burst
    bot_interval_seconds: tuple[int, int] = (1, 3)  #: seconds between two bot views

    def __post_init__(self) -> None:
        if self.users < 1 or self.users > 10_000_000:
            raise ValueError("users must be in 1..10,000,000")
        if self.days < 1:
            raise ValueError("days must be >= 1")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.n_products < len(CATEGORIES):
            raise ValueError(f"products must be >= {len(CATEGORIES)} (one per category)")
        for name in ("bot_share", "session_focus", "explore", "brand_loyalty", "tier_loyalty", "revisit",
                     "unbranded_share", "direct_purchase_share", "duplicate_cart_share",
                     "bot_active_day_prob"):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.session_focus + self.explore > 1.0:
            raise ValueError("session_focus + explore must be <= 1")
        if self.cart_share + self.purchase_share + self.remove_share >= 0.5:
            raise ValueError("cart_share + purchase_share + remove_share must be < 0.5")
        if min(self.cart_share, self.purchase_share, self.remove_share) < 0:
            raise ValueError("shares must be >= 0")
        if self.views_per_session < 1 or self.sessions_per_user_day <= 0:
            raise ValueError("views_per_session must be >= 1 and sessions_per_user_day > 0")
        lo, hi = self.bot_interval_seconds
        if not 1 <= lo <= hi or not 0 < self.bot_burst_minutes[0] <= self.bot_burst_minutes[1]:
            raise ValueError("bad bot_interval_seconds / bot_burst_minutes range")

    @property
    def n_products(self) -> int:
        """The catalog size (explicit, or derived from the number of users)."""
        return self.products if self.products is not None else max(200, self.users // 2)

    @property
    def n_bots(self) -> int:
        """How many of the users are bots."""
        n = int(round(self.users * self.bot_share))
        return max(n, 1) if self.users >= 100 and self.bot_share > 0 else n

    @property
    def start_epoch(self) -> int:
        """Unix time of `start` at 00:00 UTC."""
        return int(datetime(self.start.year, self.start.month, self.start.day, tzinfo=timezone.utc).timestamp())


@dataclass(frozen=True)
class SynthSummary:
    """What `write_synthetic_csv` wrote (all counts are exact)."""

    path: Path
    rows: int
    event_counts: dict[str, int]  #: rows per event type name ("view", "cart", ...)
    users: int  #: distinct users with at least one row (bots included)
    sessions: int
    products: int  #: distinct products with at least one row
    bots: int  #: bots with at least one row
    bot_rows: int
    bot_user_ids: tuple[int, ...] = field(repr=False)  #: the bots' user ids (ground truth for a bot filter)

    def share(self, event_type: str | EventType) -> float:
        """Share of rows with this event type."""
        return self.event_counts.get(str(event_type), 0) / self.rows if self.rows else 0.0


# --------------------------------------------------------------------------- #
# Sampling helper
# --------------------------------------------------------------------------- #


class GroupSampler:
    """Draws items from per-group categorical distributions, vectorized.

    Items are sorted by group; the cumulative weights of group ``g`` are scaled
    to run from ``g`` to ``g + 1``, so one `searchsorted` over ``g + u`` samples
    every event's own group at once (no Python loop over events or groups).
    """

    def __init__(self, keys: np.ndarray, weights: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        weights = np.asarray(weights, dtype=np.float64)
        self.order = np.lexsort((np.arange(len(keys)), keys))  # stable: ties keep item order
        sorted_keys = keys[self.order]
        self.keys, self.start, counts = np.unique(sorted_keys, return_index=True, return_counts=True)
        self.end = self.start + counts
        group = np.repeat(np.arange(len(self.keys)), counts)
        w = weights[self.order]
        cum = np.cumsum(w)
        before = np.concatenate(([0.0], cum))[self.start]  # cumulative weight before each group
        total = cum[self.end - 1] - before
        total[total <= 0] = 1.0
        self.cum = group + (cum - before[group]) / total[group]

    def group_of(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Group positions of `keys` and a mask of the keys that exist."""
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, len(self.keys) - 1)
        return pos, self.keys[pos] == keys

    def sample(self, keys: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One item index per key (u: uniforms in [0, 1)); the mask says which keys had a group."""
        g, valid = self.group_of(np.asarray(keys, dtype=np.int64))
        pos = np.searchsorted(self.cum, g + u, side="right")
        pos = np.clip(pos, self.start[g], self.end[g] - 1)  # guard float rounding at group edges
        return self.order[pos], valid


# --------------------------------------------------------------------------- #
# Catalog
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Catalog:
    """Categories, brands and products, as parallel numpy arrays (index = position)."""

    category_names: tuple[str, ...]
    category_coded: np.ndarray  # bool per category
    category_ids: np.ndarray  # int64, 19 digits
    category_weight: np.ndarray  # traffic share per category (sums to 1)
    brand_names: tuple[str, ...]  # global brand list; index len(brand_names) = no brand
    brand_tier: np.ndarray  # int8 per brand
    product_ids: np.ndarray  # int64
    product_category: np.ndarray  # int32
    product_brand: np.ndarray  # int32, `no_brand` for products without a brand
    product_tier: np.ndarray  # int8
    product_price: np.ndarray  # float64, rounded to cents
    product_weight: np.ndarray  # popularity within its category (sums to 1 per category)
    by_category: GroupSampler = field(repr=False)
    by_category_tier: GroupSampler = field(repr=False)  # key category * 3 + tier
    by_category_brand: GroupSampler = field(repr=False)  # key category * (n_brands + 1) + brand
    favourite_brands: GroupSampler = field(repr=False)  # (category, brand) pairs keyed by category
    favourite_brand_of_pair: np.ndarray = field(repr=False)

    @property
    def no_brand(self) -> int:
        return len(self.brand_names)

    @property
    def n_products(self) -> int:
        return len(self.product_ids)

    def brand_key(self, category: np.ndarray, brand: np.ndarray) -> np.ndarray:
        return category.astype(np.int64) * (self.no_brand + 1) + brand


def _split_products(total: int, weights: np.ndarray) -> np.ndarray:
    """Products per category: one each, the rest ~ weight**0.7 (largest remainder, deterministic)."""
    share = weights**0.7 / (weights**0.7).sum()
    rest = total - len(weights)
    exact = share * rest
    counts = np.floor(exact).astype(np.int64)
    short = rest - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts + 1


def _category_brands(rng: np.random.Generator, spec: CategorySpec, brand_index: dict[str, int]) -> np.ndarray:
    """The category's brands (global ids), in family popularity order: a weighted subset of the family."""
    pool = BRAND_FAMILIES[spec.family]
    k = int(min(len(pool), rng.integers(5, 13)))
    p = 1.0 / np.sqrt(np.arange(1, len(pool) + 1))
    chosen = np.sort(rng.choice(len(pool), size=k, replace=False, p=p / p.sum()))
    return np.array([brand_index[pool[i]] for i in chosen], dtype=np.int32)


def _stratified_flags(rng: np.random.Generator, popularity: np.ndarray, share: float) -> np.ndarray:
    """Flag ~`share` of the items, evenly spread over the popularity ranking.

    Why: a random flag on a Zipf head product would swing the row share by
    several points in small files; stratifying keeps it near `share` at any size.
    """
    ranked = np.argsort(-popularity, kind="stable")
    offset = rng.random()
    pos = np.arange(len(ranked), dtype=np.float64)
    hit = np.floor((pos + 1) * share + offset) > np.floor(pos * share + offset)
    flags = np.zeros(len(ranked), dtype=bool)
    flags[ranked] = hit
    return flags


def build_catalog(config: SynthConfig) -> Catalog:
    """The deterministic product catalog of `config` (depends on seed and catalog size only)."""
    rng = np.random.default_rng([config.seed, _STREAM_CATALOG])
    brand_names = tuple(BRAND_TIERS)
    brand_index = {name: i for i, name in enumerate(brand_names)}
    no_brand = len(brand_names)
    brand_tier = np.array([BRAND_TIERS[b] for b in brand_names], dtype=np.int8)

    cat_weight = np.array([c.weight for c in CATEGORIES])
    cat_weight = cat_weight / cat_weight.sum()
    n_cat = len(CATEGORIES)
    counts = _split_products(config.n_products, cat_weight)

    # 19-digit category ids like the real ones (2053013555631882655, 2103807459595387724).
    prefixes = np.where(rng.random(n_cat) < 0.8, 2053013550_000000000, 2103807450_000000000)
    category_ids = prefixes + rng.choice(10_000_000_000 // 1000, size=n_cat, replace=False).astype(np.int64) * 1000
    category_ids += rng.integers(0, 1000, size=n_cat)

    # Product ids: one id block per category (as in the real file, where ids cluster by category).
    block = (_PRODUCT_ID_MAX - _PRODUCT_ID_MIN) // n_cat
    if counts.max() > block:
        raise ValueError(f"too many products for the id range ({config.n_products})")

    cats, ids, brands, weights = [], [], [], []
    for c, spec in enumerate(CATEGORIES):
        n = int(counts[c])
        cats.append(np.full(n, c, dtype=np.int32))
        offsets = np.sort(rng.choice(block, size=n, replace=False))
        ids.append(_PRODUCT_ID_MIN + c * block + offsets)
        rank = rng.permutation(n)  # popularity rank is unrelated to the id
        w = 1.0 / (rank + 1.0) ** config.zipf_exponent
        weights.append(w / w.sum())
        cat_brands = _category_brands(rng, spec, brand_index)
        bw = 1.0 / np.arange(1, len(cat_brands) + 1)
        pick = np.searchsorted(np.cumsum(bw / bw.sum()), rng.random(n), side="right")
        brands.append(cat_brands[pick.clip(0, len(cat_brands) - 1)])
    product_category = np.concatenate(cats)
    product_ids = np.concatenate(ids).astype(np.int64)
    product_weight = np.concatenate(weights)
    product_brand = np.concatenate(brands).astype(np.int32)

    unbranded = _stratified_flags(rng, product_weight * cat_weight[product_category], config.unbranded_share)
    product_brand[unbranded] = no_brand
    product_tier = np.where(
        unbranded,
        np.searchsorted(np.cumsum(NO_TIER_MIX), rng.random(len(product_ids)), side="right").clip(0, 2),
        brand_tier[np.minimum(product_brand, no_brand - 1)],
    ).astype(np.int8)
    levels = np.array([c.price for c in CATEGORIES])[product_category]
    price = levels * TIER_PRICE[product_tier] * rng.lognormal(0.0, 0.35, size=len(product_ids))
    product_price = np.maximum(np.round(price, 2), 0.01)

    by_category_brand_key = product_category.astype(np.int64) * (no_brand + 1) + product_brand
    # Favourite brands: the (category, brand) pairs that have products, weighted by sqrt of
    # their popularity so tastes are not all "samsung" (what makes taste differ from popularity).
    branded = ~unbranded
    pair_keys, pair_inverse = np.unique(by_category_brand_key[branded], return_inverse=True)
    pair_weight = np.bincount(pair_inverse, weights=product_weight[branded])
    pair_category = pair_keys // (no_brand + 1)
    pair_brand = (pair_keys % (no_brand + 1)).astype(np.int32)

    return Catalog(
        category_names=tuple(c.name for c in CATEGORIES),
        category_coded=np.array([c.coded for c in CATEGORIES]),
        category_ids=category_ids.astype(np.int64),
        category_weight=cat_weight,
        brand_names=brand_names,
        brand_tier=brand_tier,
        product_ids=product_ids,
        product_category=product_category,
        product_brand=product_brand,
        product_tier=product_tier,
        product_price=product_price,
        product_weight=product_weight,
        by_category=GroupSampler(product_category, product_weight),
        by_category_tier=GroupSampler(product_category.astype(np.int64) * 3 + product_tier, product_weight),
        by_category_brand=GroupSampler(by_category_brand_key, product_weight),
        favourite_brands=GroupSampler(pair_category, np.sqrt(pair_weight)),
        favourite_brand_of_pair=pair_brand,
    )


# --------------------------------------------------------------------------- #
# Users
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Population:
    """The users and their persistent tastes (index = position)."""

    user_ids: np.ndarray  # int64, unique 9-digit 5xxxxxxxx
    activity: np.ndarray  # mean sessions per day (0 for bots)
    is_bot: np.ndarray  # bool
    bot_first_day: np.ndarray  # per user; a bot is always active on this day (-1 for humans)
    fav_category: np.ndarray  # (users, 3) int32; unused slots repeat slot 0 with weight 0
    fav_weight: np.ndarray  # (users, 3) float64, rows sum to 1, slot 0 the heaviest
    fav_brand: np.ndarray  # (users, 3) int32 preferred brand per favourite category (-1: none)
    tier: np.ndarray  # int8 preferred price tier

    @property
    def bot_indices(self) -> np.ndarray:
        return np.flatnonzero(self.is_bot)


def _distinct_draws(rng: np.random.Generator, cum: np.ndarray, n: int, k: int) -> np.ndarray:
    """(n, k) category draws from cumulative weights `cum`, distinct within each row (rejection)."""
    out = np.empty((n, k), dtype=np.int32)
    for j in range(k):
        draw = np.searchsorted(cum, rng.random(n), side="right").clip(0, len(cum) - 1)
        clash = (out[:, :j] == draw[:, None]).any(axis=1)
        while clash.any():  # redraw clashes; conditional on "not yet chosen" = without replacement
            draw[clash] = np.searchsorted(cum, rng.random(int(clash.sum())), side="right").clip(0, len(cum) - 1)
            clash = (out[:, :j] == draw[:, None]).any(axis=1)
        out[:, j] = draw
    return out


def _user_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unique 9-digit ids 5xxxxxxxx: one random id per equal-width stride (unique by construction)."""
    stride = _USER_ID_SPAN // n
    return (_USER_ID_MIN + np.arange(n, dtype=np.int64) * stride + rng.integers(0, stride, size=n)).astype(np.int64)


def build_population(config: SynthConfig, catalog: Catalog) -> Population:
    """The deterministic users of `config`: ids, activity, bots and tastes."""
    rng = np.random.default_rng([config.seed, _STREAM_USERS])
    n = config.users
    user_ids = _user_ids(rng, n)

    sigma = config.activity_sigma
    activity = config.sessions_per_user_day * rng.lognormal(-sigma**2 / 2, sigma, size=n)
    activity = np.minimum(activity, 8.0)  # even heavy shoppers stay far below bot rates
    is_bot = np.zeros(n, dtype=bool)
    is_bot[rng.choice(n, size=config.n_bots, replace=False)] = True
    activity[is_bot] = 0.0
    bot_first_day = np.where(is_bot, rng.integers(0, config.days, size=n), -1)

    # 1-3 favourite categories, chosen by category traffic; the main one carries most weight.
    n_fav = np.searchsorted(np.cumsum([0.45, 0.35, 0.2]), rng.random(n), side="right").clip(0, 2) + 1
    fav_category = _distinct_draws(rng, np.cumsum(catalog.category_weight), n, 3)
    used = np.arange(3)[None, :] < n_fav[:, None]
    fav_category = np.where(used, fav_category, fav_category[:, :1])
    raw = (rng.exponential(size=(n, 3)) + np.array([1.0, 0.0, 0.0])) * used
    raw = -np.sort(-raw, axis=1)  # heaviest slot first
    fav_weight = raw / raw.sum(axis=1, keepdims=True)

    pair, valid = catalog.favourite_brands.sample(fav_category.ravel(), rng.random(fav_category.size))
    fav_brand = np.where(valid, catalog.favourite_brand_of_pair[pair], -1).reshape(n, 3).astype(np.int32)
    tier = np.searchsorted(np.cumsum([0.35, 0.45, 0.2]), rng.random(n), side="right").clip(0, 2).astype(np.int8)
    return Population(
        user_ids=user_ids,
        activity=activity,
        is_bot=is_bot,
        bot_first_day=bot_first_day,
        fav_category=fav_category,
        fav_weight=fav_weight,
        fav_brand=fav_brand,
        tier=tier,
    )


# --------------------------------------------------------------------------- #
# One day of events
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class DayEvents:
    """Events as parallel numpy columns (codes and indices, not text)."""

    time: np.ndarray  # int64 unix seconds
    event_type: np.ndarray  # int8 index into EVENT_TYPES
    product: np.ndarray  # int32 index into the catalog
    user: np.ndarray  # int32 index into the population
    session: np.ndarray  # uint64 session serial (day << 32 | number); see `session_uuids`

    def __len__(self) -> int:
        return len(self.time)

    def take(self, index: np.ndarray | slice) -> DayEvents:
        return DayEvents(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    @staticmethod
    def concat(parts: Sequence[DayEvents]) -> DayEvents:
        return DayEvents(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(DayEvents))
        )

    def sorted_by_time(self) -> DayEvents:
        """Stable sort by time: same-second events keep their (deterministic) generation order."""
        return self.take(np.argsort(self.time, kind="stable"))

    @staticmethod
    def empty() -> DayEvents:
        return DayEvents(
            np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0, np.int32), np.empty(0, np.int32),
            np.empty(0, np.uint64),
        )  # fmt: skip


def _lognormal_seconds(rng: np.random.Generator, n: int, median: float, sigma: float, lo: int, hi: int) -> np.ndarray:
    return np.clip(np.rint(rng.lognormal(np.log(median), sigma, size=n)), lo, hi).astype(np.int64)


def _calibrated(weights: np.ndarray, target_mean: float, cap: float) -> np.ndarray:
    """Probabilities proportional to `weights`, capped at `cap`, whose mean is `target_mean`.

    Why not a plain rescale: capping the strongest matches would lower the mean
    and the file's funnel shares would drift below the real ones.
    """
    if len(weights) == 0 or target_mean <= 0:
        return np.zeros(len(weights))
    if target_mean > cap:
        logger.warning("funnel target %.3f per event exceeds the cap %.2f: shares will fall short", target_mean, cap)
        target_mean = cap
    lo, hi = 0.0, cap / weights.min()
    for _ in range(40):  # bisection on the scale factor
        mid = (lo + hi) / 2
        if np.minimum(weights * mid, cap).mean() < target_mean:
            lo = mid
        else:
            hi = mid
    return np.minimum(weights * hi, cap)


def _within_group_index(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of `lengths`: the group of each element and its position within the group."""
    group = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    return group, np.arange(int(lengths.sum())) - starts[group]


def _human_sessions(rng, day: int, config: SynthConfig, population: Population):
    """Session owners, start times and view counts for the day's human sessions."""
    day_start = config.start_epoch + day * 86_400
    weekday = (config.start.weekday() + day) % 7
    n_sessions = rng.poisson(population.activity * WEEKDAY_RHYTHM[weekday])
    user = np.repeat(np.arange(len(n_sessions), dtype=np.int32), n_sessions)
    hour_cum = np.cumsum(HOURLY_RHYTHM / HOURLY_RHYTHM.sum())
    hour = np.searchsorted(hour_cum, rng.random(len(user)), side="right").clip(0, 23)
    start = day_start + hour * 3600 + rng.integers(0, 3600, size=len(user))
    views = rng.geometric(1.0 / config.views_per_session, size=len(user))
    return user, start, views


def _pick_categories(rng, config: SynthConfig, catalog: Catalog, population: Population, user, sess_slot):
    """Category and favourite slot (-1 = exploring) of every view."""
    n = len(user)
    u = rng.random(n)
    w_cum = np.cumsum(population.fav_weight[user], axis=1)
    any_slot = (rng.random(n)[:, None] >= w_cum).sum(axis=1)
    any_slot = np.minimum(any_slot, 2)
    slot = np.where(u < config.session_focus, sess_slot, any_slot)
    explore = u >= 1.0 - config.explore
    category = population.fav_category[user, slot]
    explored = np.searchsorted(np.cumsum(catalog.category_weight), rng.random(n), side="right")
    category = np.where(explore, explored.clip(0, len(catalog.category_weight) - 1), category)
    return category.astype(np.int32), np.where(explore, -1, slot)


def _pick_products(rng, config: SynthConfig, catalog: Catalog, population: Population, user, category, slot):
    """Product of every view: by preferred brand, by preferred tier, or by popularity."""
    n = len(user)
    mode = rng.random(n)
    brand = population.fav_brand[user, np.maximum(slot, 0)]
    use_brand = (slot >= 0) & (brand >= 0) & (mode < config.brand_loyalty)
    use_tier = ~use_brand & (rng.random(n) < config.tier_loyalty)
    u = rng.random(n)
    product, _ = catalog.by_category.sample(category, u)
    by_tier, ok_tier = catalog.by_category_tier.sample(category.astype(np.int64) * 3 + population.tier[user], u)
    by_brand, ok_brand = catalog.by_category_brand.sample(catalog.brand_key(category, brand), u)
    product = np.where(use_tier & ok_tier, by_tier, product)  # missing tier in a category: popularity
    product = np.where(use_brand & ok_brand, by_brand, product)
    return product.astype(np.int32)


def _taste_match(catalog: Catalog, population: Population, user, product):
    """Per event: (favourite category, preferred brand, preferred tier) match flags."""
    category = catalog.product_category[product]
    eq = population.fav_category[user] == category[:, None]
    is_fav = eq.any(axis=1)
    pref_brand = population.fav_brand[user, eq.argmax(axis=1)]
    brand_match = is_fav & (catalog.product_brand[product] == pref_brand)
    tier_match = catalog.product_tier[product] == population.tier[user]
    return is_fav, brand_match, tier_match


def _human_views(
    rng, day: int, config: SynthConfig, catalog: Catalog, population: Population
) -> tuple[DayEvents, int]:
    """The day's human views (in session order, not yet sorted) and the number of sessions."""
    sess_user, sess_start, sess_views = _human_sessions(rng, day, config, population)
    n_sess = len(sess_user)
    w_cum = np.cumsum(population.fav_weight[sess_user], axis=1)
    sess_slot = np.minimum((rng.random(n_sess)[:, None] >= w_cum).sum(axis=1), 2)

    sess, pos = _within_group_index(sess_views)
    user = sess_user[sess]
    # Views a few seconds to minutes apart: time = start + within-session cumulative gaps.
    gaps = _lognormal_seconds(rng, len(sess), 25.0, 1.0, 1, 1800)
    gaps[pos == 0] = 0
    csum = np.cumsum(gaps)
    time = sess_start[sess] + csum - (csum - gaps)[pos == 0][sess]

    category, slot = _pick_categories(rng, config, catalog, population, user, sess_slot[sess])
    product = _pick_products(rng, config, catalog, population, user, category, slot)
    # Re-views: copy the previous view's product (the first view of a session never does).
    again = (pos > 0) & (rng.random(len(sess)) < config.revisit)
    source = np.maximum.accumulate(np.where(again, 0, np.arange(len(sess))))
    product = product[source]

    serial = (np.uint64(day) << np.uint64(32)) | sess.astype(np.uint64)
    return DayEvents(time.astype(np.int64), np.zeros(len(sess), np.int8), product, user, serial), n_sess


def _bot_views(rng, day: int, config: SynthConfig, catalog: Catalog, population: Population, first_serial: int):
    """Bursts of views every 1-3 s at random products, one session per active bot."""
    bots = population.bot_indices
    active = (rng.random(len(bots)) < config.bot_active_day_prob) | (population.bot_first_day[bots] == day)
    bots = bots[active]
    if len(bots) == 0:
        return DayEvents.empty()
    lo, hi = config.bot_interval_seconds
    minutes = rng.uniform(*config.bot_burst_minutes, size=len(bots))
    counts = np.maximum((minutes * 60 / ((lo + hi) / 2)).astype(np.int64), 1)
    start = config.start_epoch + day * 86_400 + rng.integers(0, 86_400, size=len(bots))  # bots ignore the rhythm
    burst, pos = _within_group_index(counts)
    steps = rng.integers(lo, hi + 1, size=len(burst))
    steps[pos == 0] = 0
    csum = np.cumsum(steps)
    time = start[burst] + csum - (csum - steps)[pos == 0][burst]
    product = rng.integers(0, catalog.n_products, size=len(burst)).astype(np.int32)
    serial = (np.uint64(day) << np.uint64(32)) | (np.uint64(first_serial) + burst.astype(np.uint64))
    user = bots[burst].astype(np.int32)
    return DayEvents(time.astype(np.int64), np.zeros(len(burst), np.int8), product, user, serial)


def _follow_up(rng, source: DayEvents, kind: int, median_s: float, lo: int, hi: int) -> DayEvents:
    """Copies of `source` as `kind` events a log-normal delay later (same user, product, session)."""
    delay = _lognormal_seconds(rng, len(source), median_s, 0.9, lo, hi)
    return dataclasses.replace(source, time=source.time + delay, event_type=np.full(len(source), kind, np.int8))


def _funnel(rng, config: SynthConfig, catalog: Catalog, population: Population, views: DayEvents, n_bot_views: int):
    """Cart, purchase and remove_from_cart rows for the human `views`, calibrated to the target shares."""
    if len(views) == 0:
        return DayEvents.empty()
    # Total rows T = views + carts + purchases + removes, with carts = cart_share * T etc.
    total = (len(views) + n_bot_views) / (1.0 - config.cart_share - config.purchase_share - config.remove_share)
    unique_carts = config.cart_share * total / (1.0 + config.duplicate_cart_share)
    purchases = config.purchase_share * total
    direct = purchases * config.direct_purchase_share

    is_fav, brand_match, tier_match = _taste_match(catalog, population, views.user, views.product)
    same_session = views.session[1:] == views.session[:-1]
    again = np.concatenate(([False], (views.product[1:] == views.product[:-1]) & same_session))
    # Why these weights: carting and buying follow taste (what a reranker should learn);
    # a re-viewed product shows interest.
    cart_w = np.exp(0.4 * is_fav + 1.0 * brand_match + 0.8 * tier_match + 0.4 * again)
    buy_w = np.exp(0.5 * tier_match + 0.5 * brand_match)
    carted = rng.random(len(views)) < _calibrated(cart_w, unique_carts / len(views), 0.9)
    buy_now = ~carted & (rng.random(len(views)) < _calibrated(buy_w, direct / len(views), 0.5))

    carts = _follow_up(rng, views.take(carted), CART, 12.0, 1, 600)
    bought = rng.random(len(carts)) < _calibrated(buy_w[carted], (purchases - direct) / max(len(carts), 1), 0.98)
    paid = _follow_up(rng, carts.take(bought), PURCHASE, 60.0, 5, 1800)
    paid_now = _follow_up(rng, views.take(buy_now), PURCHASE, 40.0, 5, 900)

    left = carts.take(~bought)  # only carts that were not bought can be removed
    wanted = config.remove_share * total
    if wanted > len(left):
        logger.warning("remove_share too high for cart_share / purchase_share: %d of %.0f removals", len(left), wanted)
    removed = _follow_up(rng, left.take(rng.random(len(left)) < wanted / max(len(left), 1)), REMOVE, 40.0, 2, 1800)
    dupes = carts.take(rng.random(len(carts)) < config.duplicate_cart_share)  # identical rows, same second
    return DayEvents.concat([carts, dupes, paid, paid_now, removed])


def generate_day(day: int, config: SynthConfig, catalog: Catalog, population: Population) -> DayEvents:
    """All events of sessions that start on `day` (0-based), sorted by time.

    Pure and deterministic: the result depends only on (config, day), so days
    can be generated in any order. Sessions started late may run past midnight.
    """
    rng = np.random.default_rng([config.seed, _STREAM_DAY, day])
    views, n_human_sessions = _human_views(rng, day, config, catalog, population)
    bots = _bot_views(rng, day, config, catalog, population, n_human_sessions)
    extra = _funnel(rng, config, catalog, population, views, len(bots))
    return DayEvents.concat([views, bots, extra]).sorted_by_time()


# --------------------------------------------------------------------------- #
# Text columns
# --------------------------------------------------------------------------- #

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_DIGIT_POS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijective 64-bit mixer (SplitMix64 finalizer): distinct inputs give distinct outputs."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _fixed_width_strings(chars: np.ndarray) -> pa.Array:
    """A pyarrow string array from an (n, width) uint8 matrix of ASCII characters."""
    n, width = chars.shape
    offsets = np.arange(n + 1, dtype=np.int32) * width
    data = np.ascontiguousarray(chars).tobytes()
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def session_uuids(serials: np.ndarray, seed: int) -> pa.Array:
    """UUID-v4-looking session ids, a pure function of (session serial, seed).

    Hashing the serial (instead of drawing random bits) keeps a session's id
    stable when its events are split across two days of output.
    """
    key = _splitmix64(np.array([seed], dtype=np.uint64))[0]
    hi = _splitmix64(serials.astype(np.uint64) ^ key)
    lo = _splitmix64(hi ^ np.uint64(0xD1B54A32D192ED03))
    hi = (hi & ~np.uint64(0xF000)) | np.uint64(0x4000)  # version 4
    lo = (lo & np.uint64(0x3FFFFFFFFFFFFFFF)) | np.uint64(0x8000000000000000)  # RFC 4122 variant
    n = len(serials)
    raw = np.stack([hi, lo], axis=1).astype(">u8").view(np.uint8).reshape(n, 16)  # big-endian bytes
    nibbles = np.empty((n, 32), dtype=np.uint8)
    nibbles[:, 0::2], nibbles[:, 1::2] = raw >> 4, raw & 15
    chars = np.full((n, 36), ord("-"), dtype=np.uint8)
    chars[:, _UUID_DIGIT_POS] = _HEX[nibbles]
    return _fixed_width_strings(chars)


def _price_text(prices: np.ndarray) -> pa.Array:
    """Prices with exactly two decimals ("35.80"), vectorized."""
    cents = np.rint(prices * 100).astype(np.int64)
    whole = pc.cast(pa.array(cents // 100), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), width=2, padding="0")
    return pc.binary_join_element_wise(whole, frac, ".")


#: Arrow types of the written columns (price is text so it keeps two decimals).
_SCHEMA = pa.schema(
    [(name, pa.int64() if name in ("product_id", "category_id", "user_id") else pa.string()) for name in CSV_COLUMNS]
)


@dataclass(frozen=True, eq=False)
class _TextTables:
    """Per-product / per-category text, formatted once and gathered with `take` per day."""

    price: pa.Array
    category_code: pa.Array  # per category, "" for uncoded ones
    brand: pa.Array  # per brand id, "" at `no_brand`
    event_type: pa.Array


def _text_tables(catalog: Catalog) -> _TextTables:
    return _TextTables(
        price=_price_text(catalog.product_price),
        category_code=pa.array([n if c else "" for n, c in zip(catalog.category_names, catalog.category_coded)]),
        brand=pa.array([*catalog.brand_names, ""]),
        event_type=pa.array([str(e) for e in EVENT_TYPES]),
    )


def events_to_table(
    events: DayEvents, catalog: Catalog, population: Population, seed: int, text: _TextTables | None = None
) -> pa.Table:
    """The OpenCDP columns (`CSV_COLUMNS`) of `events`, ready for the CSV writer."""
    text = text or _text_tables(catalog)
    n = len(events)
    if n:
        t0 = int(events.time.min())
        seconds = pa.array(np.arange(t0, int(events.time.max()) + 1, dtype=np.int64), pa.timestamp("s"))
        stamps = pc.strftime(seconds, format="%Y-%m-%d %H:%M:%S UTC").take(pa.array(events.time - t0))
    else:
        stamps = pa.array([], pa.string())
    product = events.product
    category = catalog.product_category[product]
    columns = [
        stamps,
        text.event_type.take(pa.array(events.event_type)),
        pa.array(catalog.product_ids[product]),
        pa.array(catalog.category_ids[category]),
        text.category_code.take(pa.array(category)),
        text.brand.take(pa.array(catalog.product_brand[product])),
        text.price.take(pa.array(product)),
        pa.array(population.user_ids[events.user]),
        session_uuids(events.session, seed),
    ]
    return pa.Table.from_arrays(columns, names=list(CSV_COLUMNS))


# --------------------------------------------------------------------------- #
# The file
# --------------------------------------------------------------------------- #


class _Tally:
    """Running counts for the summary (bounded memory: one flag per user and product)."""

    def __init__(self, catalog: Catalog, population: Population) -> None:
        self.population = population
        self.rows = 0
        self.types = np.zeros(len(EVENT_TYPES), dtype=np.int64)
        self.users = np.zeros(len(population.user_ids), dtype=bool)
        self.products = np.zeros(catalog.n_products, dtype=bool)
        self.sessions = 0
        self.bot_rows = 0

    def add(self, events: DayEvents, sessions_started: int) -> None:
        self.rows += len(events)
        self.types += np.bincount(events.event_type, minlength=len(EVENT_TYPES))
        self.users[events.user] = True
        self.products[events.product] = True
        self.sessions += sessions_started
        self.bot_rows += int(self.population.is_bot[events.user].sum())

    def summary(self, path: Path) -> SynthSummary:
        bots = self.population.is_bot & self.users
        return SynthSummary(
            path=path,
            rows=self.rows,
            event_counts={str(e): int(c) for e, c in zip(EVENT_TYPES, self.types)},
            users=int(self.users.sum()),
            sessions=self.sessions,
            products=int(self.products.sum()),
            bots=int(bots.sum()),
            bot_rows=self.bot_rows,
            bot_user_ids=tuple(int(u) for u in self.population.user_ids[bots]),
        )


_WRITE_CHUNK = 262_144  # rows formatted as text at a time


def _write_days(
    partial: Path, config: SynthConfig, catalog: Catalog, population: Population, tally: _Tally, progress: bool
) -> None:
    """Generate, merge with what the previous day held back, sort, cut at midnight, write."""
    held = DayEvents.empty()
    text = _text_tables(catalog)
    options = pacsv.WriteOptions(quoting_style="none", quoting_header="none", batch_size=65_536)
    with pacsv.CSVWriter(partial, _SCHEMA, write_options=options) as writer, tqdm(
        unit="rows", unit_scale=True, disable=not progress, desc="synth", dynamic_ncols=True
    ) as bar:
        for day in range(config.days):
            fresh = generate_day(day, config, catalog, population)
            sessions_started = len(np.unique(fresh.session))
            events = DayEvents.concat([held, fresh]).sorted_by_time()
            if day < config.days - 1:  # hold back what belongs to the next day
                cut = int(np.searchsorted(events.time, config.start_epoch + (day + 1) * 86_400, side="left"))
            else:
                cut = len(events)
            out, held = events.take(slice(0, cut)), events.take(slice(cut, None))
            for lo in range(0, len(out), _WRITE_CHUNK):  # format in chunks: text is ~10x the numpy size
                chunk = out.take(slice(lo, lo + _WRITE_CHUNK))
                writer.write_table(events_to_table(chunk, catalog, population, config.seed, text))
                bar.update(len(chunk))
            tally.add(out, sessions_started)
            bar.set_postfix(day=f"{day + 1}/{config.days}")
            logger.debug("day %d: %d rows written, %d held for the next day", day, len(out), len(held))


def write_synthetic_csv(path: Path, config: SynthConfig, progress: bool = True) -> SynthSummary:
    """Writes the CSV (sorted by event_time) and returns counts: rows, per event type, users, sessions, products, bots.

    The file is generated day by day: events of sessions that run past midnight
    are held back and merged into the next day, so the whole file is sorted
    while only about one day of events is in memory. Sessions started on the
    last day may end a few minutes after its midnight; those rows are kept.
    The file appears under `path` only when complete (written to a ``.part``
    sibling, then renamed; removed on error).
    """
    path = Path(path)
    started = time.perf_counter()
    catalog = build_catalog(config)
    population = build_population(config, catalog)
    tally = _Tally(catalog, population)
    logger.info(
        "synthesizing %d users (%d bots), %d products, %d days from %s, seed %d -> %s",
        config.users, config.n_bots, catalog.n_products, config.days, config.start, config.seed, path,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        _write_days(partial, config, catalog, population, tally, progress)
    except BaseException:
        partial.unlink(missing_ok=True)  # no half-written file left behind
        raise
    partial.replace(path)
    elapsed = time.perf_counter() - started
    summary = tally.summary(path)
    logger.info(
        "wrote %d rows (%s), %d users, %d sessions, %d bots in %.1f s (%.0f rows/s)",
        summary.rows, summary.event_counts, summary.users, summary.sessions, summary.bots, elapsed,
        summary.rows / elapsed if elapsed > 0 else 0.0,
    )  # fmt: skip
    return summary
