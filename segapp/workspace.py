"""What the review page shows: a WORK folder's manifest, findings and pictures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from segprep.augment.preview import outlined
from segprep.decisions import default_path, read_decisions
from segprep.errors import SegprepError
from segprep.manifest import read_manifest
from segprep.shards import binary_mask, read_image, read_mask, read_roi

log = logging.getLogger(__name__)

ORIGINAL_RGB = (255, 0, 0)   # the mask as ingested, red, where clean repaired it (clean's: green)


@dataclass
class Workspace:
    work: Path
    manifest: Path
    rows: pd.DataFrame             # the manifest, with a position column
    findings: pd.DataFrame         # clean's findings (empty without clean)
    originals: dict[str, tuple[str, int]]  # sample_id -> ingest mask (shard, index), repaired only

    @classmethod
    def open(cls, work: Path) -> "Workspace":
        work = Path(work)
        manifests = work / "manifests"
        manifest = next((manifests / name for name in ("clean.csv", "ingest.csv")
                         if (manifests / name).is_file()), None)
        if manifest is None:
            raise SegprepError(f"{work}: no manifests/clean.csv or manifests/ingest.csv; run "
                               f"`segprep ingest ... -o {work}` (and `segprep clean`) first")
        rows = read_manifest(manifest).reset_index(drop=True)
        findings_path = work / "reports" / "clean" / "findings.csv"
        findings = (pd.read_csv(findings_path, dtype=str, keep_default_na=False)
                    if manifest.name == "clean.csv" and findings_path.is_file()
                    else pd.DataFrame(columns=["sample_id", "code", "severity", "value", "action",
                                               "message", "partner"]))
        originals: dict[str, tuple[str, int]] = {}
        ingest_csv = manifests / "ingest.csv"
        if manifest.name == "clean.csv" and ingest_csv.is_file():
            ingested = read_manifest(ingest_csv, check_shards=False).set_index("sample_id")
            for sample_id in rows.loc[rows["status"] == "repaired", "sample_id"]:
                if sample_id in ingested.index:
                    row = ingested.loc[sample_id]
                    originals[sample_id] = (str(manifests / row["mask_shard"]), int(row["mask_index"]))
        return cls(work, manifest, rows, findings, originals)

    @property
    def decisions_path(self) -> Path:
        return default_path(self.work)

    def index_of(self, sample_id: str) -> int | None:
        hits = np.flatnonzero(self.rows["sample_id"].to_numpy() == sample_id)
        return int(hits[0]) if len(hits) else None

    def summary(self) -> list[dict]:
        """One record per sample for the grid: what the filters and sorting need."""
        decisions = read_decisions(self.decisions_path)
        by_sample = self.findings.groupby("sample_id") if len(self.findings) else None
        out = []
        for i, row in enumerate(self.rows.to_dict("records")):
            found = (by_sample.get_group(row["sample_id"]).to_dict("records")
                     if by_sample is not None and row["sample_id"] in by_sample.groups else [])
            scores = {}
            for f in found:
                try:
                    scores[f["code"]] = float(f["value"])
                except ValueError:
                    pass
            decision = decisions.get(row["sample_id"])
            out.append({"index": i, "sample_id": row["sample_id"], "split": row["split"],
                        "status": row["status"], "source": row["source"], "group": row["group"],
                        "codes": sorted({f["code"] for f in found}),
                        "fg_fraction": float(row.get("fg_fraction") or 0.0), "scores": scores,
                        "repaired": row["sample_id"] in self.originals,
                        "decision": decision.decision if decision else ""})
        return out

    def detail(self, index: int) -> dict:
        row = self.rows.iloc[index].to_dict()
        found = (self.findings[self.findings["sample_id"] == row["sample_id"]].to_dict("records")
                 if len(self.findings) else [])
        partner = next((f["partner"] for f in found if f.get("partner")), "")
        decision = read_decisions(self.decisions_path).get(row["sample_id"])
        return {"index": index, "sample_id": row["sample_id"], "split": row["split"],
                "status": row["status"], "issues": row["issues"], "source": row["source"],
                "group": row["group"], "height": int(row["height"]), "width": int(row["width"]),
                "fg_fraction": float(row.get("fg_fraction") or 0.0), "findings": found,
                "partner": partner, "partner_index": self.index_of(partner) if partner else None,
                "repaired": row["sample_id"] in self.originals,
                "decision": decision.__dict__ if decision else None}

    def _outlined(self, image: np.ndarray, row: pd.Series, current: tuple[Path, int]) -> np.ndarray:
        """The image with the outlines of the review: the ingested mask (red) where clean
        repaired it, then clean's mask and the field of view as `segprep augment --preview`
        draws them."""
        mask, _ = binary_mask(read_mask(*current))
        thickness = max(1, round(min(image.shape[:2]) / 150))
        if mask.shape != image.shape[:2]:  # size_mismatch: no outline can be placed
            mask = np.zeros(image.shape[:2], np.uint8)
        elif row["sample_id"] in self.originals:
            shard, at = self.originals[row["sample_id"]]
            original, _ = binary_mask(read_mask(Path(shard), at))
            contours, _ = cv2.findContours(original, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
            image = cv2.drawContours(image.copy(), contours, -1, ORIGINAL_RGB, thickness)
        roi = read_roi(Path(self.manifest.parent / row["image_shard"]), int(row["image_index"]))
        return outlined(image, mask, roi, thickness)

    def picture(self, index: int, kind: str, size: int | None) -> np.ndarray:
        """BGR pixels: ``image``, ``overlay`` (outlines: clean's mask green, the ingested one
        red where clean repaired it, the field of view), ``mask`` (0/255) or ``original`` (the
        ingested mask). Each kind reads only what it shows."""
        row = self.rows.iloc[index]
        root = self.manifest.parent
        current = (root / row["mask_shard"], int(row["mask_index"]))
        if kind in ("mask", "original"):
            shard, at = self.originals.get(row["sample_id"], current) if kind == "original" else current
            mask, _ = binary_mask(read_mask(Path(shard), at))
            canvas = cv2.cvtColor(((mask > 0) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        elif kind in ("image", "overlay"):
            image = read_image(root / row["image_shard"], int(row["image_index"]))
            if kind == "overlay":
                image = self._outlined(image, row, current)
            canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        else:
            raise SegprepError(f"unknown picture {kind!r}; valid: image, overlay, mask, original")
        if size:
            scale = size / max(canvas.shape[:2])
            if scale < 1:
                canvas = cv2.resize(canvas, (max(1, round(canvas.shape[1] * scale)),
                                             max(1, round(canvas.shape[0] * scale))),
                                    interpolation=cv2.INTER_AREA)
        return canvas
