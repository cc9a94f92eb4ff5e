"""The pure recommendation core: the fallback order, skips and reasons, scoring and filters (no services)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from services.api import recommend as rec
from services.api.recommend import FALLBACK_CHAIN, NoSource, Ranked, Skip, SkipReason, Source


def ranked(*ids: int, reason: str = "r") -> Ranked:
    return Ranked(np.asarray(ids, np.int64), np.arange(len(ids), 0, -1).astype(np.float32), (reason,) * len(ids))


def skip(reason: SkipReason):
    def step() -> Ranked:
        raise Skip(reason)

    return step


# --- the chain -------------------------------------------------------------------------


def test_the_chain_is_declared_once_in_order() -> None:
    assert FALLBACK_CHAIN == (
        Source.RANKER, Source.ALS, Source.SESSION_ITEM_ITEM, Source.CATEGORY_POPULAR, Source.GLOBAL_POPULAR,
    )  # fmt: skip
    assert rec.PERSONALISED == {Source.RANKER, Source.ALS, Source.SESSION_ITEM_ITEM}


def test_first_source_that_answers_wins_and_later_ones_are_not_called() -> None:
    called: list[Source] = []

    def step(source: Source, result):
        def run() -> Ranked:
            called.append(source)
            if isinstance(result, SkipReason):
                raise Skip(result)
            return result

        return run

    steps = {
        Source.RANKER: step(Source.RANKER, SkipReason.NO_ARTIFACT),
        Source.ALS: step(Source.ALS, SkipReason.UNKNOWN_USER),
        Source.SESSION_ITEM_ITEM: step(Source.SESSION_ITEM_ITEM, ranked(7, 8, 9)),
        Source.CATEGORY_POPULAR: step(Source.CATEGORY_POPULAR, ranked(1)),
        Source.GLOBAL_POPULAR: step(Source.GLOBAL_POPULAR, ranked(2)),
    }
    answer = rec.answer(steps, k=2)
    assert answer.source is Source.SESSION_ITEM_ITEM
    assert answer.ranked.product_ids.tolist() == [7, 8]  # cut to k
    assert [(s.source, s.reason) for s in answer.skipped] == [
        (Source.RANKER, SkipReason.NO_ARTIFACT), (Source.ALS, SkipReason.UNKNOWN_USER),
    ]  # fmt: skip
    assert called == [Source.RANKER, Source.ALS, Source.SESSION_ITEM_ITEM]


@pytest.mark.parametrize("answering", list(FALLBACK_CHAIN))
def test_each_source_answers_when_every_earlier_one_skips(answering: Source) -> None:
    position = FALLBACK_CHAIN.index(answering)
    steps = {s: skip(SkipReason.ONLINE_STORE_DOWN) for s in FALLBACK_CHAIN[:position]}
    steps |= {s: (lambda s=s: ranked(100 + FALLBACK_CHAIN.index(s))) for s in FALLBACK_CHAIN[position:]}
    answer = rec.answer(steps, k=10)
    assert answer.source is answering
    assert answer.ranked.product_ids.tolist() == [100 + position]
    assert [s.source for s in answer.skipped] == list(FALLBACK_CHAIN[:position])


def test_an_empty_list_falls_through_except_from_the_last_source() -> None:
    empty = Ranked(np.empty(0, np.int64), np.empty(0, np.float32), ())
    steps = {s: (lambda: empty) for s in FALLBACK_CHAIN}
    answer = rec.answer(steps, k=5)
    assert answer.source is Source.GLOBAL_POPULAR and len(answer.ranked) == 0
    assert {s.reason for s in answer.skipped} == {SkipReason.EMPTY}
    assert len(answer.skipped) == len(FALLBACK_CHAIN) - 1


def test_a_missing_step_is_skipped_as_no_artifact_and_nothing_left_raises() -> None:
    answer = rec.answer({Source.GLOBAL_POPULAR: lambda: ranked(1)}, k=3)
    assert answer.source is Source.GLOBAL_POPULAR
    assert all(s.reason is SkipReason.NO_ARTIFACT for s in answer.skipped)
    with pytest.raises(NoSource) as raised:
        rec.answer({Source.GLOBAL_POPULAR: skip(SkipReason.NO_ARTIFACT)}, k=3)
    assert [s.source for s in raised.value.skipped] == list(FALLBACK_CHAIN)


def test_ranked_lengths_must_agree() -> None:
    with pytest.raises(ValueError):
        Ranked(np.asarray([1, 2]), np.asarray([1.0]), ("a", "b"))


# --- scoring -----------------------------------------------------------------------------


def test_top_by_factors_is_the_exact_top_n_by_dot_product() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(500, 8)).astype(np.float32)
    user = rng.normal(size=8).astype(np.float32)
    rows, scores = rec.top_by_factors(user, items, 20)
    expected = np.argsort(-(items @ user), kind="stable")[:20]
    assert rows.tolist() == expected.tolist()
    assert np.allclose(scores, (items @ user)[expected])
    assert rec.top_by_factors(user, items, 10_000)[0].shape == (500,)  # n above the catalogue: everything
    assert rec.top_by_factors(user, items[:0], 5)[0].shape == (0,)


def test_session_votes_weigh_the_latest_item_most_and_name_the_seed() -> None:
    item_ids = np.asarray([10, 20, 30, 40, 50], np.int64)
    # 10 ~ 30 (0.9); 20 ~ 40 (0.8), 20 ~ 50 (0.1); 30 ~ 10
    sim = sp.csr_matrix(
        (np.asarray([0.9, 0.8, 0.1, 0.9], np.float32), ([0, 1, 1, 2], [2, 3, 4, 0])), shape=(5, 5)
    )
    ids, scores, seeds = rec.session_votes(sim, item_ids, recent=[10, 20], n=10)  # 20 is the latest
    assert ids.tolist() == [40, 30, 50]  # 0.8 * 1 > 0.9 * 1/2 > 0.1 * 1
    assert np.allclose(scores, [0.8, 0.45, 0.1])
    assert seeds.tolist() == [20, 10, 20]
    assert rec.session_votes(sim, item_ids, recent=[999], n=10)[0].size == 0  # unknown products vote for nothing
    assert rec.session_votes(sim, item_ids, recent=[], n=10)[0].size == 0
    # a product viewed twice votes once, at its latest position
    ids, scores, _ = rec.session_votes(sim, item_ids, recent=[20, 10, 20], n=10)
    assert ids.tolist() == [40, 30, 50]


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "prefix", "inside"),
    [
        ("electronics.smartphone", "electronics", True),
        ("electronics.smartphone", "electronics.smartphone", True),
        ("electronics", "electronics", True),
        ("electronicsx.tv", "electronics", False),  # a prefix is a whole path segment
        ("appliances.kitchen", "electronics", False),
        (None, "electronics", False),
    ],
)
def test_category_prefix(code, prefix, inside) -> None:
    assert rec.in_category(code, prefix) is inside


def test_keep_applies_mask_and_exclusions_in_order() -> None:
    ids = np.asarray([5, 6, 7, 8], np.int64)
    assert rec.keep(ids).tolist() == [0, 1, 2, 3]
    assert rec.keep(ids, exclude={6, 99}).tolist() == [0, 2, 3]
    assert rec.keep(ids, rec.category_mask(["a.b", "c", None, "a"], "a"), {8}).tolist() == [0]
    assert rec.category_mask(["x", None], None).tolist() == [True, True]


# --- reasons -------------------------------------------------------------------------------


def test_reasons_say_why_in_words() -> None:
    phone = {"product_id": 1, "category_id": 7, "category_code": "electronics.smartphone", "brand": "samsung"}
    taste = rec.Taste.from_profile({"brand_shares": {"samsung": 0.5}, "category_shares": {"7": 0.4}})
    assert rec.personal_reason(phone, taste) == "matches your taste for samsung"
    assert rec.personal_reason({**phone, "brand": "apple"}, taste) == "you often shop in electronics.smartphone"
    assert rec.personal_reason(phone, rec.Taste()) == "shoppers with a taste like yours chose it"
    assert rec.personal_reason(None, taste) == "shoppers with a taste like yours chose it"
    assert rec.session_reason(1, phone) == "viewed samsung electronics.smartphone 1 in this session"
    assert rec.session_reason(9, None) == "viewed product 9 in this session"
    assert rec.popular_reason("electronics.smartphone", "purchase", 7) == "best seller in electronics.smartphone this week"
    assert rec.popular_reason(None, "view", 1) == "most viewed today"
    assert rec.popular_reason(None, "purchase", 30) == "best seller in the last 30 days"


def test_taste_ignores_a_missing_profile() -> None:
    assert rec.Taste.from_profile(None) == rec.Taste()
    assert rec.Taste.from_profile({"brand_shares": None, "category_shares": None}) == rec.Taste()
