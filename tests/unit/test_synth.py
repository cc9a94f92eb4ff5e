"""The synthetic OpenCDP generator: exact format, realistic marginals, learnable structure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from producer.events import CSV_COLUMNS, ClickEvent, EventType
from producer.synth import (
    SynthConfig,
    SynthSummary,
    build_catalog,
    build_population,
    generate_day,
    session_uuids,
    write_synthetic_csv,
)

CONFIG = SynthConfig(users=3000, days=4, seed=7)
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$")
PRICE_RE = re.compile(r"^\d+\.\d{2}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@dataclass
class Written:
    path: Path
    summary: SynthSummary
    table: pa.Table  # every column as text, blanks as ""
    time: np.ndarray  # unix seconds
    day: np.ndarray
    user: np.ndarray
    event_type: np.ndarray
    product: np.ndarray
    session: np.ndarray
    category: np.ndarray
    brand: np.ndarray
    is_bot: np.ndarray


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    path = tmp_path_factory.mktemp("synth") / "clicks.csv"
    summary = write_synthetic_csv(path, CONFIG, progress=False)
    text_types = {name: pa.string() for name in CSV_COLUMNS}
    table = pacsv.read_csv(
        path, convert_options=pacsv.ConvertOptions(column_types=text_types, strings_can_be_null=False)
    )
    seconds = pc.strptime(table["event_time"], format="%Y-%m-%d %H:%M:%S UTC", unit="s")
    time = seconds.cast(pa.int64()).to_numpy()
    user = np.array(table["user_id"].to_pylist(), dtype=np.int64)
    return Written(
        path=path,
        summary=summary,
        table=table,
        time=time,
        day=(time - CONFIG.start_epoch) // 86_400,
        user=user,
        event_type=np.array(table["event_type"].to_pylist()),
        product=np.array(table["product_id"].to_pylist(), dtype=np.int64),
        session=np.array(table["user_session"].to_pylist()),
        category=np.array(table["category_id"].to_pylist(), dtype=np.int64),
        brand=np.array(table["brand"].to_pylist()),
        is_bot=np.isin(user, np.array(summary.bot_user_ids, dtype=np.int64)),
    )


# --------------------------------------------------------------------------- format


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    small = SynthConfig(users=400, days=2, seed=3)
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    write_synthetic_csv(a, small, progress=False)
    write_synthetic_csv(b, small, progress=False)
    write_synthetic_csv(c, SynthConfig(users=400, days=2, seed=4), progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert not list(tmp_path.glob("*.part"))  # the temporary file was renamed


def test_header_line_endings_and_column_count(written: Written) -> None:
    raw = written.path.read_bytes()
    assert b"\r" not in raw and b'"' not in raw
    assert raw.endswith(b"\n")
    lines = raw.decode().split("\n")[:-1]
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert all(line.count(",") == len(CSV_COLUMNS) - 1 for line in lines[1:])
    assert len(lines) - 1 == written.summary.rows


def test_rows_parse_as_click_events_with_the_opencdp_formats(written: Written) -> None:
    lines = written.path.read_text().split("\n")[1:-1]
    rng = np.random.default_rng(0)
    sample = lines[:1500] + [lines[i] for i in rng.choice(len(lines), 1500, replace=False)]
    for line in sample:
        fields = line.split(",")
        event = ClickEvent.from_csv_fields(fields)
        assert TIME_RE.match(fields[0]), fields[0]
        assert PRICE_RE.match(fields[6]), fields[6]
        assert UUID_RE.match(fields[8]), fields[8]
        assert len(fields[3]) == 19 and len(fields[7]) == 9 and fields[7].startswith("5")
        assert 1_000_000 <= event.product_id < 60_000_000
        assert event.event_type in (EventType.VIEW, EventType.CART, EventType.PURCHASE)
        assert event.event_time.year == CONFIG.start.year


def test_rows_are_sorted_by_time_and_cover_every_day(written: Written) -> None:
    assert np.all(np.diff(written.time) >= 0)
    assert set(np.unique(written.day[written.day < CONFIG.days])) == set(range(CONFIG.days))
    assert written.day.max() <= CONFIG.days  # at most a tail of sessions that ran past midnight


def test_product_attributes_are_consistent_across_rows(written: Written) -> None:
    t = written.table
    pairs = {
        col: len(set(zip(t["product_id"].to_pylist(), t[col].to_pylist())))
        for col in ("category_id", "category_code", "brand", "price")
    }
    n_products = len(set(t["product_id"].to_pylist()))
    assert all(n == n_products for n in pairs.values()), pairs
    assert n_products == written.summary.products
    # one code per category id
    assert len(set(zip(t["category_id"].to_pylist(), t["category_code"].to_pylist()))) == len(
        set(t["category_id"].to_pylist())
    )


def test_summary_matches_the_file(written: Written) -> None:
    s = written.summary
    types, counts = np.unique(written.event_type, return_counts=True)
    assert {k: v for k, v in s.event_counts.items() if v} == dict(zip(types.tolist(), counts.tolist()))
    assert s.users == len(np.unique(written.user))
    assert s.sessions == len(np.unique(written.session))
    assert s.bot_rows == int(written.is_bot.sum())
    assert s.bots == CONFIG.n_bots == 3


# --------------------------------------------------------------------------- marginals


def test_funnel_shares_are_near_the_real_ones(written: Written) -> None:
    s = written.summary
    assert s.share("view") == pytest.approx(0.96, abs=0.01)
    assert s.share("cart") == pytest.approx(0.022, rel=0.15)
    assert s.share("purchase") == pytest.approx(0.0175, rel=0.15)
    assert s.event_counts["remove_from_cart"] == 0


def test_blank_brand_and_category_code_shares(written: Written) -> None:
    blank_brand = np.mean(written.brand == "")
    blank_code = np.mean(np.array(written.table["category_code"].to_pylist()) == "")
    assert blank_brand == pytest.approx(0.14, abs=0.04)
    assert blank_code == pytest.approx(0.31, abs=0.05)


def test_sessions_have_about_four_and_a_half_events_seconds_to_minutes_apart(written: Written) -> None:
    per_session = written.summary.rows / written.summary.sessions
    assert 4.0 < per_session < 5.2
    human = ~written.is_bot
    order = np.lexsort((written.time[human], written.session[human]))
    sess, t = written.session[human][order], written.time[human][order]
    gaps = np.diff(t)[sess[1:] == sess[:-1]]
    assert 5 <= np.median(gaps) <= 120
    assert np.quantile(gaps, 0.99) < 3600


def test_product_popularity_is_heavy_tailed(written: Written) -> None:
    views = written.product[(written.event_type == "view") & ~written.is_bot]
    counts = np.sort(np.unique(views, return_counts=True)[1])[::-1]
    top10 = counts[: len(counts) // 10].sum() / counts.sum()
    top1 = counts[: len(counts) // 100].sum() / counts.sum()
    # uniform popularity would give about 0.15 and 0.02 at this sample size
    assert top10 > 0.4 and top1 > 0.1


def test_daily_rhythm_has_a_quiet_night_and_an_afternoon_peak(written: Written) -> None:
    hours = (written.time[~written.is_bot] % 86_400) // 3600
    night = np.isin(hours, [21, 22, 23, 0]).sum()
    afternoon = np.isin(hours, [14, 15, 16, 17]).sum()
    assert afternoon > 2.5 * night


# --------------------------------------------------------------------------- users, bots, taste


def test_bots_fire_far_more_events_per_hour_than_any_human(written: Written) -> None:
    assert written.summary.bots >= 1
    hour = written.time // 3600
    key = written.user * 1_000_000 + (hour - hour.min())
    keys, counts = np.unique(key, return_counts=True)
    owner = keys // 1_000_000
    is_bot = np.isin(owner, np.array(written.summary.bot_user_ids, dtype=np.int64))
    bot_peak = np.array([counts[owner == b].max() for b in written.summary.bot_user_ids])
    human_peak = counts[~is_bot].max()
    assert bot_peak.min() >= 100
    assert bot_peak.min() > 4 * human_peak
    # and they click every 1-3 seconds
    bot = written.user == written.summary.bot_user_ids[0]
    steps = np.diff(written.time[bot])
    within_burst = steps[steps < 60]
    assert len(within_burst) >= 100 and set(np.unique(within_burst)) <= {1, 2, 3}


def test_users_return_on_several_days(written: Written) -> None:
    human = ~written.is_bot
    pairs = np.unique(written.user[human] * 10 + np.minimum(written.day[human], CONFIG.days - 1))
    days_per_user = np.unique(pairs // 10, return_counts=True)[1]
    assert np.mean(days_per_user >= 2) > 0.3
    assert np.mean(days_per_user >= 3) > 0.1
    # and activity is heavy-tailed: the busiest 10% of users produce far more than 10% of rows
    rows = np.sort(np.unique(written.user[human], return_counts=True)[1])[::-1]
    assert rows[: len(rows) // 10].sum() / rows.sum() > 0.3


def test_taste_is_persistent_across_days(written: Written) -> None:
    """A user's later events stay in their first-day top category far above its global share."""
    human = ~written.is_bot
    user, day, cat = written.user[human], written.day[human], written.category[human]
    global_share = {c: n / len(cat) for c, n in zip(*np.unique(cat, return_counts=True))}
    own, base = [], []
    for u in np.unique(user[day == 0]):
        first, later = cat[(user == u) & (day == 0)], cat[(user == u) & (day > 0)]
        if len(later) < 3:
            continue
        values, counts = np.unique(first, return_counts=True)
        top = values[counts.argmax()]
        own.append(np.mean(later == top))
        base.append(global_share[top])
    assert len(own) > 300
    assert np.mean(own) > 2 * np.mean(base)
    assert np.mean(own) - np.mean(base) > 0.2


def test_purchases_mostly_follow_a_cart_of_the_same_product_in_the_session(written: Written) -> None:
    carts: dict[tuple[str, int], int] = {}
    for s, p, t in zip(*(a[written.event_type == "cart"] for a in (written.session, written.product, written.time))):
        carts.setdefault((s, int(p)), int(t))
    buys = [(s, int(p), int(t)) for s, p, t in zip(
        *(a[written.event_type == "purchase"] for a in (written.session, written.product, written.time)))]  # fmt: skip
    preceded = [(s, p) in carts and carts[(s, p)] <= t for s, p, t in buys]
    assert len(buys) > 300
    assert 0.85 < np.mean(preceded) < 1.0  # a few "buy now" purchases have no cart


def test_carting_favours_products_that_match_the_users_taste() -> None:
    """What a reranker must learn: same category, the preferred brand / tier converts better."""
    config = SynthConfig(users=4000, days=2, seed=11)
    catalog = build_catalog(config)
    population = build_population(config, catalog)
    days = [generate_day(d, config, catalog, population) for d in range(config.days)]
    user = np.concatenate([d.user for d in days])
    product = np.concatenate([d.product for d in days])
    kind = np.concatenate([d.event_type for d in days])
    views, carts = kind == 0, kind == 1

    def cart_rate(mask: np.ndarray) -> float:
        return carts[mask].sum() / max(views[mask].sum(), 1)

    tier_match = catalog.product_tier[product] == population.tier[user]
    slot = population.fav_category[user] == catalog.product_category[product][:, None]
    brand_match = slot.any(axis=1) & (
        catalog.product_brand[product] == population.fav_brand[user, slot.argmax(axis=1)]
    )
    assert cart_rate(tier_match) > 1.3 * cart_rate(~tier_match)
    assert cart_rate(brand_match) > 2.0 * cart_rate(~brand_match)


# --------------------------------------------------------------------------- building blocks


def test_generate_day_is_pure_and_days_differ() -> None:
    config = SynthConfig(users=500, days=3, seed=5)
    catalog = build_catalog(config)
    population = build_population(config, catalog)
    a = generate_day(1, config, catalog, population)
    b = generate_day(1, config, catalog, population)
    c = generate_day(2, config, catalog, population)
    for name in ("time", "event_type", "product", "user", "session"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.product[: len(c)], c.product[: len(a)])
    assert np.all(np.diff(a.time) >= 0)
    day_start = config.start_epoch + 86_400
    assert a.time.min() >= day_start and np.mean(a.time < day_start + 86_400) > 0.99


def test_catalog_and_population_ids_are_realistic_and_unique() -> None:
    config = SynthConfig(users=20_000, days=1, seed=1)
    catalog = build_catalog(config)
    population = build_population(config, catalog)
    assert len(catalog.product_ids) == config.n_products == 10_000
    assert len(np.unique(catalog.product_ids)) == len(catalog.product_ids)
    assert catalog.product_ids.min() >= 1_000_000 and catalog.product_ids.max() < 60_000_000
    assert len(np.unique(catalog.category_ids)) == len(catalog.category_ids)
    assert all(len(str(c)) == 19 for c in catalog.category_ids)
    assert len(np.unique(population.user_ids)) == config.users
    assert population.user_ids.min() >= 500_000_000 and population.user_ids.max() <= 599_999_999
    coded = [n for n, c in zip(catalog.category_names, catalog.category_coded) if c]
    assert len(coded) >= 30 and all(re.fullmatch(r"[a-z_]+(\.[a-z_]+){1,2}", n) for n in coded)
    assert population.is_bot.sum() == config.n_bots == 20
    assert np.all((population.fav_weight.sum(axis=1) - 1) < 1e-9)


def test_session_uuids_are_unique_and_look_like_uuid4() -> None:
    serials = np.arange(50_000, dtype=np.uint64) | (np.uint64(3) << np.uint64(32))
    ids = session_uuids(serials, seed=42).to_pylist()
    assert len(set(ids)) == len(ids)
    assert all(UUID_RE.match(i) for i in ids[:1000])
    assert session_uuids(serials[:10], seed=43).to_pylist() != ids[:10]


def test_optional_remove_from_cart_and_duplicate_cart_rows(tmp_path: Path) -> None:
    config = SynthConfig(users=2000, days=2, seed=9, remove_share=0.003, duplicate_cart_share=0.1)
    summary = write_synthetic_csv(tmp_path / "x.csv", config, progress=False)
    assert summary.share("remove_from_cart") == pytest.approx(0.003, rel=0.3)
    assert summary.share("cart") == pytest.approx(0.022, rel=0.15)  # duplicates included in the share
    lines = (tmp_path / "x.csv").read_text().split("\n")[1:-1]
    cart_lines = [line for line in lines if ",cart," in line]
    assert len(cart_lines) - len(set(cart_lines)) > 0.05 * len(set(cart_lines))


@pytest.mark.parametrize(
    "bad",
    [
        {"users": 0},
        {"days": 0},
        {"bot_share": 1.5},
        {"products": 10},
        {"session_focus": 0.95, "explore": 0.1},
        {"cart_share": 0.4, "purchase_share": 0.2},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**bad)


def test_bot_count_follows_the_share_with_at_least_one_bot() -> None:
    assert SynthConfig(users=100).n_bots == 1
    assert SynthConfig(users=99).n_bots == 0
    assert SynthConfig(users=200_000).n_bots == 200
    assert SynthConfig(users=1000, bot_share=0).n_bots == 0
    assert SynthConfig(users=10_000).n_products == 5000 and SynthConfig(users=10).n_products == 200


def test_writes_nothing_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic_csv(tmp_path / "q.csv", SynthConfig(users=200, days=1), progress=False)
    assert capsys.readouterr().out == ""
