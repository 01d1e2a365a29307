"""Pair scoring and aggregation: which embedding goes on which side of a pair."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from m2f_bench.data.base import FaceRecord, Pair
from m2f_bench.evaluation.aggregate import aggregate
from m2f_bench.evaluation.protocol import parse_protocol
from m2f_bench.evaluation.runner import _pair_scores


def _unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_scenario_sides_and_aggregates():
    # 4 folds × (1 matched + 1 mismatched pair) over 8 people with 2 images each.
    people = [f"p{k}" for k in range(8)]
    ids = [f"{p}_{i}" for p in people for i in (1, 2)]
    records = [FaceRecord(i, i.split("_")[0], None, 6, "test") for i in ids]
    pairs = []
    for fold, (x, y) in zip(range(6, 10), [(0, 1), (2, 3), (4, 5), (6, 7)], strict=True):
        pairs.append(Pair(fold, f"p{x}_1", f"p{x}_2", True))
        pairs.append(Pair(fold, f"p{x}_1", f"p{y}_2", False))
    index = {i: k for k, i in enumerate(ids)}
    rng = np.random.default_rng(0)
    identity = _unit(rng.normal(size=(8, 16)))
    clean = np.repeat(identity, 2, axis=0)
    # "masked" embeddings carry the identity only for the SECOND image of each person, so
    # a swapped scenario (clean first, masked second) would score matched pairs high.
    masked = _unit(rng.normal(size=(16, 16)))
    masked[1::2] = clean[1::2]
    run = SimpleNamespace(pairs=pairs, index=index, records=records)
    protocol = parse_protocol(
        {
            "version": 1,
            "name": "t",
            "dataset": {"name": "demo"},
            "inpainters": [{"type": "masked"}],
            "recognizers": [{"type": "dlib-resnet"}],
            "verification": {"bootstrap": 50},
        }
    )
    emb = {"r": {"clean": clean, "masked": masked, "inpainted/masked": masked}}
    scores = _pair_scores(run, emb, ["masked"], protocol)

    first = scores[(scores.scenario == "masked-clean") & (scores.a == "p0_1")]
    matched = first[first.same].score.item()
    # masked[p0_1] is noise, clean[p0_2] is p0: a low score. Swapped sides would give 1.
    assert matched < 0.9
    assert np.isclose(
        scores[(scores.scenario == "clean-clean") & scores.same].score, 1.0, atol=1e-6
    ).all()
    assert set(scores[scores.scenario == "inpainted-clean"].inpainter) == {"masked"}
    assert set(scores[scores.scenario == "clean-clean"].inpainter) == {""}

    results = {
        "protocol": protocol.model_dump(mode="json"),
        "inpainters": {"masked": {"status": "ok", "seconds": 1.0, "spec": {"type": "masked"}}},
        "recognizers": {"r": {}},
        "metrics": {},
    }
    per_image = pd.DataFrame(
        {
            "image_id": ids,
            "identity": [r.identity for r in records],
            "inpainter": "masked",
            "mask_type": "cloth",
            "coverage_bin": "0.20–0.25",
        }
    )
    out = aggregate(results, per_image, scores)
    row = out["summary"][0]
    assert row["acc_clean_clean"] == 1.0
    assert row["acc_masked_clean"] == row["acc_inpainted_clean"] < 1.0
    assert row["n_pairs"] == len(pairs)
    by_scenario = {(v["scenario"], v["inpainter"]): v for v in out["verification"]}
    assert by_scenario[("clean-clean", "")]["auc"] == 1.0
