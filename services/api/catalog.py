"""The shop's view of the catalogue: display names, browsing and search over the loaded `Catalogue`.

The click files carry no product names, so a product is named from what the data
knows: brand, the last part of its category code and its id ("Samsung smartphone
#1002099"). `CatalogueIndex` holds lower-cased search text and a popularity order
per candidates version (built once, on first use, and dropped with the version).
Pure: numpy over the catalogue arrays, no I/O.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from services.api.recommend import category_mask
from spark_jobs.candidates.catalogue import Catalogue


def product_name(product_id: int, category_code: str | None, brand: str | None) -> str:
    """ "Samsung smartphone #1002099"; "Smartphone #1", "Samsung #1", "Product #1" when parts are missing."""
    kind = category_code.rsplit(".", 1)[-1].replace("_", " ") if category_code else ""
    words = [brand.capitalize() if brand else "", kind]
    text = " ".join(w for w in words if w)
    text = text[:1].upper() + text[1:] if text else "Product"
    return f"{text} #{product_id}"


def name_of(info: Mapping[str, object]) -> str:
    return product_name(int(info["product_id"]), info.get("category_code"), info.get("brand"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Page:
    rows: np.ndarray  #: catalogue rows of the page, in order
    total: int  #: rows that matched


class CatalogueIndex:
    """Search text and popularity order of one catalogue."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        codes = catalogue.category_codes
        brands = catalogue.brands
        text = [
            f"{pid} {(b or '').lower()} {(c or '').lower()} {(c or '').replace('.', ' ').replace('_', ' ').lower()}"
            for pid, b, c in zip(catalogue.product_ids.tolist(), brands.tolist(), codes.tolist())
        ]
        self.text = np.asarray(text, dtype=str)
        # most purchased, then most viewed, then by id
        self.order = np.lexsort((catalogue.product_ids, -catalogue.views, -catalogue.purchases))

    def search(self, *, category: str | None = None, q: str | None = None, offset: int = 0, k: int = 24) -> Page:
        """Products in `category` (a code prefix or a numeric id) whose text holds every word of `q`."""
        mask = np.ones(len(self.catalogue), bool)
        if category:
            if category.isdigit():
                mask &= self.catalogue.category_ids == int(category)
            else:
                mask &= category_mask(self.catalogue.category_codes, category)
        for word in (q or "").lower().split():
            mask &= np.char.find(self.text, word) >= 0
        ordered = self.order[mask[self.order]]
        return Page(rows=ordered[offset : offset + k], total=int(len(ordered)))

    def categories(self) -> tuple[list[tuple[str, int, int]], int]:
        """(code, products, purchases) of every category code, most products first; and the uncategorised count."""
        codes = self.catalogue.category_codes
        known = np.asarray([c is not None and c != "" for c in codes.tolist()], bool)
        names, inverse, counts = np.unique(codes[known].astype(str), return_inverse=True, return_counts=True)
        purchases = np.bincount(inverse, weights=self.catalogue.purchases[known], minlength=len(names))
        order = np.lexsort((names, -counts))
        rows = [(str(names[i]), int(counts[i]), int(purchases[i])) for i in order]
        return rows, int((~known).sum())


_indexes: weakref.WeakKeyDictionary[Catalogue, CatalogueIndex] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def index_for(catalogue: Catalogue) -> CatalogueIndex:
    """The index of a loaded catalogue (built once per candidates version)."""
    with _lock:
        index = _indexes.get(catalogue)
        if index is None:
            index = _indexes[catalogue] = CatalogueIndex(catalogue)
        return index
