"""The catalogue side of the candidates artifact: browse and search, one product, similar products, best sellers.

GET /products (category and text search), GET /products/{product_id}, GET /categories
and GET /products/{product_id}/similar, GET /popular. Everything reads the loaded
candidates version (its `Catalogue`, neighbours and popular lists): no Redis.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Query

from services.api.catalog import index_for, name_of
from services.api.deps import SnapshotDep
from services.api.errors import NotFound, UnknownProduct
from services.api.routers.common import K, Category, ProductId, candidates_of, errors
from services.api.schemas import (
    Categories,
    CategoryCount,
    PopularItem,
    PopularProducts,
    ProductCard,
    ProductInfo,
    ProductList,
    SimilarItem,
    SimilarProducts,
)

router = APIRouter(tags=["products"])

Search = Annotated[
    str | None,
    Query(min_length=1, max_length=200, description="Words that must all appear in the brand, category code or product id."),
]


def _card(cands, row: int) -> ProductCard:
    cat = cands.catalogue
    info = cands.describe(int(cat.product_ids[row]))
    return ProductCard(**info, name=name_of(info), views=int(cat.views[row]), purchases=int(cat.purchases[row]))


@router.get("/products", response_model=ProductList, responses=errors(503))
def products(
    snapshot: SnapshotDep,
    category: Category = None,
    q: Search = None,
    k: Annotated[int, Query(ge=1, le=200, description="Products per page.")] = 24,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Products to skip (paging).")] = 0,
) -> ProductList:
    """Browse and search the catalogue: products in a category and / or matching every word of `q`.

    `q` matches brand, category code (``smartphone`` finds ``electronics.smartphone``)
    and product id (``1002`` finds 1002099). Most purchased first, then most viewed.
    """
    cands = candidates_of(snapshot)
    page = index_for(cands.catalogue).search(category=category, q=q, offset=offset, k=k)
    items = [_card(cands, row) for row in page.rows.tolist()]
    return ProductList(category=category, q=q, total=page.total, offset=offset, items=items, candidates_version=cands.version)


@router.get("/products/{product_id}", response_model=ProductCard, responses=errors(404, 503))
def product(product_id: ProductId, snapshot: SnapshotDep) -> ProductCard:
    """One product of the catalogue: category, brand, price, display name and its counts in the data."""
    cands = candidates_of(snapshot)
    row = int(cands.catalogue.index_of(np.asarray([product_id], np.int64))[0])
    if row < 0:
        raise UnknownProduct(f"product {product_id} is not in the catalogue of candidates version {cands.version}")
    return _card(cands, row)


@router.get("/categories", response_model=Categories, responses=errors(503))
def categories(snapshot: SnapshotDep) -> Categories:
    """Every category code of the catalogue with its number of products (most products first)."""
    cands = candidates_of(snapshot)
    rows, uncategorised = index_for(cands.catalogue).categories()
    return Categories(
        categories=[CategoryCount(category_code=c, products=n, purchases=p) for c, n, p in rows],
        uncategorised=uncategorised, candidates_version=cands.version,
    )  # fmt: skip


@router.get("/products/{product_id}/similar", response_model=SimilarProducts, responses=errors(404, 503))
def similar(
    product_id: ProductId,
    snapshot: SnapshotDep,
    k: K = 10,
    kind: Annotated[Literal["also_viewed", "also_bought"], Query(description="Co-viewed or co-bought.")] = "also_viewed",
) -> SimilarProducts:
    """Products seen (or bought) in the same sessions as this one, most similar first."""
    cands = candidates_of(snapshot)
    info = cands.describe(product_id)
    if info is None:
        raise UnknownProduct(f"product {product_id} is not in the catalogue of candidates version {cands.version}")
    neighbours = cands.neighbours[kind]
    row = int(neighbours.index_of(np.asarray([product_id], np.int64))[0])
    items: list[SimilarItem] = []
    if row >= 0:
        lo, hi = neighbours.similarity.indptr[row], neighbours.similarity.indptr[row + 1]
        cols, scores = neighbours.similarity.indices[lo:hi], neighbours.similarity.data[lo:hi]
        ids = neighbours.item_ids[cols]
        order = np.lexsort((ids, -scores))[:k]
        for pid, score, other in zip(ids[order].tolist(), scores[order].tolist(), cands.describe_many(ids[order])):
            other = other or {}
            items.append(SimilarItem(product_id=pid, score=score, category_code=other.get("category_code"),
                                     brand=other.get("brand"), price=other.get("price")))  # fmt: skip
    return SimilarProducts(product=ProductInfo(**info), kind=kind, items=items, candidates_version=cands.version)


@router.get("/popular", response_model=PopularProducts, responses=errors(404, 503))
def popular(
    snapshot: SnapshotDep,
    category: Category = None,
    k: K = 10,
    window_days: Annotated[int | None, Query(ge=1, le=366, description="Look-back window in days of data (default: the longest).")] = None,
    metric: Annotated[Literal["purchase", "view"], Query(description="Best sellers or most viewed.")] = "purchase",
) -> PopularProducts:
    """Best sellers (distinct buyers) or most viewed products, overall or in a category."""
    cands = candidates_of(snapshot)
    lists = cands.popular
    window = window_days if window_days is not None else lists.default_window
    if window is None or window not in lists.windows:
        raise NotFound(f"no popular list over {window_days} days; candidates version {cands.version} has {list(lists.windows)}")
    top = lists.top(category=category, window_days=window, metrics=(metric,), k=k)
    items = [
        PopularItem(product_id=pid, rank=rank, users=users, category_code=(info or {}).get("category_code"),
                    brand=(info or {}).get("brand"), price=(info or {}).get("price"))  # fmt: skip
        for rank, (pid, users, info) in enumerate(
            zip(top.product_ids.tolist(), top.users.tolist(), cands.describe_many(top.product_ids)), start=1
        )
    ]
    return PopularProducts(category=category, metric=metric, window_days=window, items=items, candidates_version=cands.version)
