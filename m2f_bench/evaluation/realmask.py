"""Recognition of really masked people: masked probes against a clean gallery.

Run by ``m2f-bench evaluate`` when the protocol's dataset has real masks
(``masked-folder``). For every person with at least one clean and one masked photo, one
clean photo (a seeded choice) is the gallery; every masked photo is a probe, and the
other clean photos are reference probes (what the recognizer does without masks). Each
probe is compared with the gallery in these conditions:

* ``clean`` — the clean reference probes;
* ``masked`` — the masked photos as they are;
* ``inpainted/<name>`` — the masked photos unmasked blind by each inpainter of the
  protocol: a segmenter finds the mask (``hole: predicted``, the only hole there is), the
  inpainter fills it; a probe where no mask is found stays as it was.

Verification: each probe against its own gallery photo (genuine) and against
``impostors_per_probe`` seeded other galleries (impostors); accuracy with 10-fold
thresholds over identity folds, AUC and TAR@FAR, cluster-bootstrap intervals over the
probe's identity. Identification: the rank of the true identity among all gallery
photos by cosine; rank-k accuracy with the same intervals. There is no ground truth for
pixels, so no pixel metric. Photos in which no face is detected are counted, by kind.

Files: ``crops/``, ``inpainted/<name>/`` (with ``holes/``), ``embeddings/``,
``probes.csv`` (one row per recognizer, condition and probe: genuine score and rank),
``pair_scores.csv`` (every verification pair's score), ``summary.csv``,
``results.json`` and ``report.html``.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m2f_bench import __version__
from m2f_bench._io import atomic_write_json, atomic_write_text, read_image, write_png
from m2f_bench._progress import progress_bar
from m2f_bench.errors import M2FError
from m2f_bench.evaluation.protocol import IdentificationSpec, Protocol

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = (
    "recognizer",
    "condition",
    "n_probes",
    "n_identities",
    "mask_found",
    "acc",
    "acc_std",
    "acc_ci_low",
    "acc_ci_high",
    "auc",
)


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def choose_gallery(records, seed: int) -> tuple[dict[str, Any], list, list]:
    """(gallery record by identity, masked probes, clean reference probes).

    Every person with a clean photo has one in the gallery (a seeded choice), so people
    without a masked photo are distractors; the masked photos of people with a gallery
    photo are the probes, and the other clean photos of those people the references.
    """
    clean: dict[str, list] = {}
    masked: dict[str, list] = {}
    for r in records:
        (masked if r.masked else clean).setdefault(r.identity, []).append(r)
    gallery = {}
    for identity in sorted(clean):
        key = [hashlib.sha256(f"{seed}:{r.image_id}".encode()).hexdigest() for r in clean[identity]]
        gallery[identity] = clean[identity][int(np.argmin(key))]
    probed = [i for i in gallery if i in masked]
    probes = [r for i in probed for r in masked[i]]
    references = [r for i in probed for r in clean[i] if r is not gallery[i]]
    return gallery, probes, references


def identification_ranks(probe: np.ndarray, gallery: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of the true gallery entry of each probe (ties count against it)."""
    scores = probe @ gallery.T
    true = scores[np.arange(len(probe)), truth]
    return (scores >= true[:, None]).sum(axis=1)


class RealMaskEvaluation:
    """One real-mask run (see the module docstring)."""

    def __init__(
        self,
        protocol: Protocol,
        settings: Any,
        out_dir: Path,
        dataset: Any,
        *,
        limit: int | None,
        device: str,
        progress: bool,
    ) -> None:
        self.protocol, self.settings, self.out_dir = protocol, settings, out_dir
        self.dataset, self.limit, self.device, self.progress = dataset, limit, device, progress
        self.spec = protocol.identification or IdentificationSpec()
        self.timings: dict[str, Any] = {"inpaint": {}, "embed": {}}

    # -- faces ------------------------------------------------------------------------
    def align(self) -> None:
        from m2f_bench.faces.pipeline import AlignerConfig

        gallery, probes, references = choose_gallery(self.dataset.records(), self.spec.gallery_seed)
        if not probes:
            raise M2FError(
                f"{self.dataset.root}: no person has both a clean and a masked photo; the "
                "real-mask protocol needs both"
            )
        if len(gallery) < 2:
            raise M2FError(
                f"{self.dataset.root}: one person only; verification and identification "
                "need at least two people with a clean photo"
            )
        if self.limit is not None and self.limit < len(probes):
            rng = np.random.default_rng(self.protocol.dataset.seed)
            keep = set(rng.choice(len(probes), self.limit, replace=False).tolist())
            probes = [p for k, p in enumerate(probes) if k in keep]
            people = {p.identity for p in probes}
            references = [r for r in references if r.identity in people]
        faces = self.protocol.faces
        config = AlignerConfig.resolve(
            self.settings,
            size=faces.size,
            detector=faces.detector,
            det_size=faces.det_size,
            device=self.device,
        )
        self.fingerprint = _digest(
            "aligned",
            faces.model_dump(mode="json"),
            str(config.scrfd_path),
            str(self.dataset.root),
            self.protocol.dataset.options,
        )
        folder = self.out_dir / "crops"
        marker = folder / "fingerprint.json"
        if marker.is_file() and json.loads(marker.read_text()) != {"key": self.fingerprint}:
            for old in folder.glob("*"):
                old.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, {"key": self.fingerprint})
        everything = list(gallery.values()) + probes + references
        failures_path = folder / "failures.json"
        failures = json.loads(failures_path.read_text()) if failures_path.is_file() else {}
        todo = [
            r
            for r in everything
            if r.image_id not in failures and not (folder / f"{r.image_id}.png").is_file()
        ]
        start = time.perf_counter()
        if todo:
            aligner = config.build()
            bar = progress_bar(len(todo), "align", enabled=self.progress)
            for k, record in enumerate(todo):
                try:
                    face = aligner.align(read_image(record.path))
                    atomic_write_json(
                        folder / f"{record.image_id}.json",
                        {"landmarks": face.landmarks.round(3).tolist()},
                        indent=None,
                    )
                    write_png(folder / f"{record.image_id}.png", face.crop)
                except Exception as exc:  # one photo must not stop the run
                    failures[record.image_id] = f"{type(exc).__name__}: {exc}"
                if k % 50 == 0 or k == len(todo) - 1:
                    atomic_write_json(failures_path, failures)
                bar.update(1)
            bar.close()
        self.timings["align"] = round(time.perf_counter() - start, 3)
        ok = {r.image_id for r in everything if r.image_id not in failures}

        def no_face(r) -> bool:
            return failures.get(r.image_id, "").startswith(("NoFaceError", "ImageTooSmallError"))

        self.failures = [
            {"image_id": r.image_id, "masked": r.masked, "reason": failures[r.image_id]}
            for r in everything
            if r.image_id in failures
        ]
        self.counts = {
            "n_identities": len(gallery),
            "n_probed": len({p.identity for p in probes}),
            "n_masked": len(probes),
            "n_clean_references": len(references),
            "n_masked_no_face": sum(no_face(r) for r in probes),
            "n_masked_failed": sum(r.image_id not in ok and not no_face(r) for r in probes),
            "n_clean_no_face": sum(r.image_id not in ok for r in references),
            "n_gallery_no_face": sum(r.image_id not in ok for r in gallery.values()),
        }
        # A person whose gallery photo has no face cannot be searched for.
        self.gallery = {i: r for i, r in gallery.items() if r.image_id in ok}
        self.probes = [p for p in probes if p.image_id in ok and p.identity in self.gallery]
        self.references = [r for r in references if r.image_id in ok and r.identity in self.gallery]
        if not self.probes:
            raise M2FError("no masked photo with a detected face is left to evaluate")
        if len(self.gallery) < 2:
            raise M2FError("fewer than two people have a gallery photo with a detected face")

    def crops(self, records) -> np.ndarray:
        from m2f_bench.evaluation.runner import _stack

        return _stack([self.out_dir / "crops" / f"{r.image_id}.png" for r in records])

    def landmarks(self, records) -> np.ndarray:
        """68 landmarks of each crop, predicted on the crop itself (masked or not)."""
        folder = self.out_dir / "crops"
        return np.stack(
            [
                np.asarray(json.loads((folder / f"{r.image_id}.json").read_text())["landmarks"])
                for r in records
            ]
        )

    # -- unmasking --------------------------------------------------------------------
    def inpaint(self) -> dict[str, dict[str, Any]]:
        """Every inpainter on the masked probes with predicted holes, cached on disk."""
        from m2f_bench._io import read_mask_png
        from m2f_bench.evaluation.holes import hole_predictor, split_hole_args
        from m2f_bench.evaluation.runner import _device_arg, _stack, inpaint_cached
        from m2f_bench.inpainters import INPAINTERS, build_inpainter
        from m2f_bench.segmenters import mask_found

        ids = [p.image_id for p in self.probes]
        masked = self.crops(self.probes)
        states: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, np.ndarray] = {}
        self.mask_found: dict[str, np.ndarray] = {}
        for plugin in self.protocol.inpainters:
            spec = plugin.spec()
            label = plugin.label
            state: dict[str, Any] = {"spec": spec, "status": "ok", "error": ""}
            states[label] = state
            if spec["type"] == "masked":
                state["hole"] = "none"
                continue
            start = time.perf_counter()
            try:
                factory = INPAINTERS.get(spec["type"])
                if spec.get("hole", "predicted") != "predicted":
                    raise M2FError("real masks have no exact hole: use hole: predicted")
                spec = {**spec, "hole": "predicted"} | _device_arg(factory, spec, self.device)
                state["spec"] = spec
                inpainter_spec, source = split_hole_args(spec, factory)
                state["hole"] = "predicted"
                folder = self.out_dir / "inpainted" / label
                inpainter = build_inpainter(inpainter_spec)
                predict, hole_model = hole_predictor(source, inpainter, self.device)
                state["model"] = inpainter.fingerprint() | hole_model
                signature = {
                    "spec": spec,
                    "model": state["model"],
                    "faces": self.fingerprint,
                    "v": __version__,
                }
                n_computed = inpaint_cached(
                    folder,
                    ids,
                    masked,
                    inpainter,
                    signature,
                    predict=predict,
                    desc=f"unmask {label}",
                    progress=self.progress,
                )
                self.outputs[label] = _stack([folder / f"{i}.png" for i in ids])
                holes = _stack([folder / "holes" / f"{i}.png" for i in ids], reader=read_mask_png)
                self.mask_found[label] = mask_found(holes)
                state["n_computed"] = n_computed
            except Exception as exc:  # one failing inpainter must not stop the others
                log.error("inpainter %s failed: %s", label, exc)
                state |= {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            state["seconds"] = round(time.perf_counter() - start, 3)
            self.timings["inpaint"][label] = state["seconds"]
        self.masked = masked
        self.states = states
        return states

    # -- recognition ------------------------------------------------------------------
    def embed(self, recognizers: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
        from m2f_bench.faces.align import CropGeometry
        from m2f_bench.recognition import EmbeddingCache

        geometry = CropGeometry(self.protocol.faces.size)
        cache = EmbeddingCache(self.out_dir / "embeddings")
        gallery_records = list(self.gallery.values())
        sets = {
            "gallery": (gallery_records, None),
            "clean": (self.references, None),
            "masked": (self.probes, self.masked),
        }
        for label, images in self.outputs.items():
            sets[f"inpainted/{label}"] = (self.probes, images)
        specs = {label: (s["spec"], s.get("model")) for label, s in self.states.items()}
        out: dict[str, dict[str, np.ndarray]] = {}
        for rec_label, recognizer in recognizers.items():
            start = time.perf_counter()
            out[rec_label] = {}
            for name, (records, images) in sets.items():
                ids = [r.image_id for r in records]
                if not ids:
                    out[rec_label][name] = np.zeros((0, 1), np.float32)
                    continue
                crops = self.crops(records) if images is None else images
                marks = self.landmarks(records)
                spec = specs.get(name.split("/", 1)[-1]) if "/" in name else None
                key = _digest(name, self.fingerprint, spec, ids)
                index = {i: k for k, i in enumerate(ids)}

                def compute(wanted, crops=crops, marks=marks, index=index, recognizer=recognizer):
                    rows = [index[i] for i in wanted]
                    return recognizer.embed(crops[rows], geometry, marks[rows])

                out[rec_label][name] = cache.get_or_compute(
                    recognizer, f"{name.replace('/', '-')}-{key}", ids, compute
                )
            self.timings["embed"][rec_label] = round(time.perf_counter() - start, 3)
        return out

    # -- scores -----------------------------------------------------------------------
    def score(self, embeddings: dict[str, dict[str, np.ndarray]]) -> tuple[list, pd.DataFrame]:
        """Pair scores and ranks of every (recognizer, condition), then their summary."""
        seed = self.protocol.verification.seed if self.protocol.verification else 0
        identities = list(self.gallery)
        position = {i: k for k, i in enumerate(identities)}
        tables, pairs = [], []
        for rec_label, emb in embeddings.items():
            gallery = emb["gallery"]
            for condition, emb_probes in emb.items():
                if condition == "gallery":
                    continue
                records = self.references if condition == "clean" else self.probes
                if not records:
                    continue
                who = np.array([position[r.identity] for r in records])
                ranks = identification_ranks(emb_probes, gallery, who)
                rng = np.random.default_rng([seed, len(records)])
                genuine = np.sum(emb_probes * gallery[who], axis=1)
                impostor_scores, impostor_probe, against = [], [], [who]
                for _ in range(self.spec.impostors_per_probe):
                    other = (who + rng.integers(1, len(identities), len(who))) % len(identities)
                    impostor_scores.append(np.sum(emb_probes * gallery[other], axis=1))
                    impostor_probe.append(np.arange(len(records)))
                    against.append(other)
                probe_index = np.concatenate([np.arange(len(records)), *impostor_probe])
                scores = np.concatenate([genuine, *impostor_scores])
                pairs.append(
                    pd.DataFrame(
                        {
                            "recognizer": rec_label,
                            "condition": condition,
                            "fold": [records[k].fold for k in probe_index],
                            "probe": [records[k].image_id for k in probe_index],
                            "probe_identity": [records[k].identity for k in probe_index],
                            "gallery_identity": [identities[g] for g in np.concatenate(against)],
                            "same": np.arange(len(scores)) < len(records),
                            "score": scores.astype(np.float64),
                        }
                    )
                )
                tables.append(
                    pd.DataFrame(
                        {
                            "recognizer": rec_label,
                            "condition": condition,
                            "image_id": [r.image_id for r in records],
                            "identity": [r.identity for r in records],
                            "genuine_score": genuine.astype(np.float64),
                            "rank": ranks,
                        }
                    )
                )
        self.pair_scores = pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame()
        probes = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        found = {f"inpainted/{k}": float(v.mean()) for k, v in self.mask_found.items()}
        return summarize(self.pair_scores, probes, self.protocol, found), probes


def summarize(
    pair_scores: pd.DataFrame, probes: pd.DataFrame, protocol: Protocol, mask_found: dict
) -> list[dict[str, Any]]:
    """Summary rows from the saved tables: verification (k-fold accuracy, AUC, TAR@FAR with
    intervals) from the pair scores, rank-k identification from the probes' ranks."""
    from m2f_bench.metrics.verification import bootstrap_ci, verification_summary

    v = protocol.verification
    fars = tuple(v.fars) if v else (1e-3, 1e-2)
    n_boot = v.bootstrap if v else 1000
    seed = v.seed if v else 0
    spec = protocol.identification or IdentificationSpec()
    rows = []
    for (rec_label, condition), ranked in probes.groupby(["recognizer", "condition"], sort=False):
        pairs = pair_scores[
            (pair_scores.recognizer == rec_label) & (pair_scores.condition == condition)
        ]
        probe_ids = ranked["identity"].astype(str).to_numpy()
        row: dict[str, Any] = {
            "recognizer": rec_label,
            "condition": condition,
            "n_probes": len(ranked),
            "n_identities": len(set(probe_ids)),
            "mask_found": mask_found.get(condition),
        }
        try:
            stats = verification_summary(
                pairs["score"].to_numpy(float),
                pairs["same"].astype(bool).to_numpy(),
                pairs["fold"].to_numpy(int),
                pairs["probe_identity"].astype(str).to_numpy(),
                fars=fars,
                n_boot=n_boot,
                seed=seed,
            )
            row |= {
                "acc": stats["acc_mean"],
                "acc_std": stats["acc_std"],
                "acc_ci_low": stats["acc_ci_low"],
                "acc_ci_high": stats["acc_ci_high"],
                "auc": stats["auc"],
            } | {k: val for k, val in stats.items() if k.startswith("tar_")}
        except M2FError as exc:
            row["verification_error"] = str(exc)
        ranks = ranked["rank"].to_numpy()
        for k in spec.ranks:
            hit = (ranks <= k).astype(np.float64)
            low, high = bootstrap_ci(
                lambda idx, hit=hit: float(hit[idx].mean()), probe_ids, n_boot=n_boot, seed=seed
            )
            row |= {f"rank{k}": float(hit.mean()), f"rank{k}_ci_low": low, f"rank{k}_ci_high": high}
        rows.append(row)
    return rows


def write_outputs(out_dir: Path, results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """``summary.csv``, ``results.json`` and ``report.html`` from the summary rows."""
    extra = [k for k in dict.fromkeys(k for row in rows for k in row) if k not in SUMMARY_COLUMNS]
    summary = pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, *extra])
    atomic_write_text(out_dir / "summary.csv", summary.to_csv(index=False, lineterminator="\n"))
    results["summary"] = rows
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_text(out_dir / "report.html", _report_html(results, summary))


def rebuild_real_masks(run_dir: Path) -> Path:
    """``m2f-bench report`` for a real-mask run: the summary again from the saved tables."""
    from m2f_bench.evaluation.protocol import parse_protocol

    try:
        results = json.loads((run_dir / "results.json").read_text())
        text = {"probe": str, "probe_identity": str, "gallery_identity": str}
        pair_scores = pd.read_csv(run_dir / "pair_scores.csv", dtype=text)
        probes = pd.read_csv(run_dir / "probes.csv", dtype={"image_id": str, "identity": str})
    except FileNotFoundError as exc:
        raise M2FError(
            f"{run_dir} is not a finished evaluation: {exc.filename} is missing"
        ) from None
    protocol = parse_protocol(results["protocol"])
    found = {r["condition"]: r.get("mask_found") for r in results.get("summary") or []}
    write_outputs(run_dir, results, summarize(pair_scores, probes, protocol, found))
    return run_dir / "report.html"


_REPORT = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:
collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#eee}}
td:first-child,td:nth-child(2){{text-align:left}}</style></head><body>
<h1>{title}</h1><p>{description}</p>
<h2>Faces</h2><p>{faces}</p>
<h2>Verification and identification</h2>{table}
<h2>How the numbers were computed</h2><p>{method}</p>
<p><small>m2f-bench {version}, commit {commit}, {finished}.</small></p></body></html>
"""


def _report_html(results: dict[str, Any], summary: pd.DataFrame) -> str:
    c = results["counts"]
    faces = (
        f"{c['n_identities']} people with a clean photo in the gallery, "
        f"{c['n_probed']} of them with masked photos; {c['n_masked']} masked "
        f"photos, of which <b>{c['n_masked_no_face']} had no face detected</b> "
        f"({100 * c['n_masked_no_face'] / max(c['n_masked'], 1):.1f} %) and "
        f"{c['n_masked_failed']} could not be read; "
        f"{c['n_clean_references']} clean reference photos ({c['n_clean_no_face']} without a "
        f"detected face); {c['n_gallery_no_face']} gallery photos without a detected face "
        "(their people are left out)."
    )
    shown = summary.copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda x: "" if pd.isna(x) else f"{x:.4f}")
    return _REPORT.format(
        title=html.escape(
            results["protocol"]["report"].get("title") or results["protocol"]["name"]
        ),
        description=html.escape(results["protocol"].get("description") or ""),
        faces=faces,
        table=shown.to_html(index=False, escape=True, na_rep=""),
        method=html.escape(results["method"]),
        version=__version__,
        commit=html.escape(str(results.get("git_commit"))),
        finished=results["finished"],
    )


def evaluate_real_masks(
    protocol: Protocol,
    settings: Any,
    out_dir: Path,
    dataset: Any,
    *,
    limit: int | None,
    device: str,
    progress: bool,
    protocol_file: str | None,
) -> dict[str, Any]:
    """Run a real-mask protocol into ``out_dir`` (see the module docstring)."""
    from m2f_bench.evaluation.runner import _device_arg, environment, git_commit
    from m2f_bench.recognition import RECOGNIZERS, build_recognizer

    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    if not protocol.recognizers:
        raise M2FError("a real-mask protocol needs at least one recognizer")
    run = RealMaskEvaluation(
        protocol, settings, out_dir, dataset, limit=limit, device=device, progress=progress
    )
    run.align()
    recognizers = {}
    for r in protocol.recognizers:
        spec = {"type": r.type, **r.args}
        spec |= _device_arg(RECOGNIZERS.get(r.type), r.args, device)
        recognizers[r.label] = build_recognizer(spec, settings)
    states = run.inpaint()
    embeddings = run.embed(recognizers)
    rows, probes = run.score(embeddings)
    atomic_write_text(out_dir / "probes.csv", probes.to_csv(index=False, lineterminator="\n"))
    # Every verification pair's score, saved before any threshold is chosen.
    atomic_write_text(
        out_dir / "pair_scores.csv", run.pair_scores.to_csv(index=False, lineterminator="\n")
    )
    spec = protocol.identification or IdentificationSpec()
    results = {
        "schema": "m2f-bench/real-masks/1",
        "protocol": protocol.model_dump(mode="json"),
        "protocol_file": protocol_file,
        "m2f_bench_version": __version__,
        "git_commit": git_commit(),
        "environment": environment(),
        "started": started,
        "device": device,
        "dataset": {"name": protocol.dataset.name, "root": str(dataset.root)},
        "counts": run.counts,
        "failures": run.failures,
        "inpainters": states,
        "recognizers": {k: {"key": r.key, "config": r.config()} for k, r in recognizers.items()},
        "summary": rows,
        "method": (
            "One clean photo per person (seeded choice, gallery_seed "
            f"{spec.gallery_seed}) is the gallery; every masked photo is a probe, the other "
            "clean photos are reference probes (condition clean). Faces are detected, the "
            "face nearest the photo centre is aligned into a "
            f"{protocol.faces.size}-px crop as in the synthetic protocols. Inpainted "
            "conditions: a segmenter finds the mask in the masked crop (hole: predicted), "
            "the inpainter fills it; mask_found is the share of probes where a mask was "
            "found (the others stay as they were). Verification: each probe against its "
            f"own gallery photo and {spec.impostors_per_probe} seeded other gallery "
            "photo(s), cosine of the embeddings; accuracy with thresholds chosen on 9 of "
            "10 identity folds and applied to the tenth, mean ± std over folds; AUC over "
            "all pairs. Identification: rank of the true person among all gallery photos "
            f"by cosine, rank-k accuracy for k in {list(spec.ranks)}. 95 % intervals: "
            "cluster bootstrap over the probe's identity "
            f"({protocol.verification.bootstrap if protocol.verification else 1000} "
            "resamples). No pixel metrics: real photos have no ground truth under the mask."
        ),
    }
    run.timings["total"] = round(time.perf_counter() - t0, 3)
    results["timings"] = run.timings
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_outputs(out_dir, results, rows)
    return results
