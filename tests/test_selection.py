from __future__ import annotations

from collections import Counter

from m2f_bench.data.base import Pair
from m2f_bench.evaluation.selection import _subset_pairs, assign_masks


def test_mask_assignment_is_balanced_and_seeded():
    ids = [f"img{i}" for i in range(100)]
    types = ["a", "b", "c", "d", "e", "f"]
    first = assign_masks(ids, types, seed=0)
    counts = Counter(first.values())
    assert set(counts) == set(types) and max(counts.values()) - min(counts.values()) <= 1
    assert assign_masks(ids, types, seed=0) == first
    assert assign_masks(ids, types, seed=1) != first


def test_pair_subset_is_balanced_over_folds_and_labels():
    pairs = [
        Pair(fold, f"{fold}-{k}-a", f"{fold}-{k}-b", same)
        for fold in range(6, 11)
        for same in (True, False)
        for k in range(50)
    ]
    subset = _subset_pairs(pairs, 100, seed=3)
    cells = Counter((p.fold, p.same) for p in subset)
    assert len(subset) == 100 and set(cells.values()) == {10}
    assert _subset_pairs(pairs, 100, seed=3) == subset
    assert _subset_pairs(pairs, 100, seed=4) != subset
    # File order is kept.
    positions = [pairs.index(p) for p in subset]
    assert positions == sorted(positions)
