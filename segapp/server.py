"""The ASGI app: pages (Jinja2) and a small JSON API. Samples are addressed by their position
in the manifest, never by a path; a decision names a sample id, which must be in the manifest."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
from pathlib import Path

import cv2
import numpy as np
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from segapp.models import Models, decode_upload, list_runs
from segapp.workspace import Workspace
from segprep.decisions import DECISIONS, read_decisions, record_decision
from segprep.errors import SegprepError

log = logging.getLogger(__name__)

_templates = Environment(loader=PackageLoader("segapp", "templates"),
                         autoescape=select_autoescape(["html", "j2"]))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _png(bgr: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise HTTPException(500, "could not encode the picture")
    return data.tobytes()


def _data_url(bgr: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(bgr)).decode()


def create_app(work: Path, runs: Path | None = None, *, token: str | None = None,
               device: str = "auto") -> FastAPI:
    """The app over WORK (its clean manifest, else its ingest manifest) and the runs under
    ``runs``. With ``token``, every request needs it (header ``X-Segkit-Token``, or ``?token=``
    once, which sets a cookie)."""
    workspace = Workspace.open(work)
    models = Models(runs, device)
    app = FastAPI(title="segkit", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if token is None:
            return await call_next(request)
        given = (request.headers.get("x-segkit-token") or request.query_params.get("token")
                 or request.cookies.get("segkit_token") or "")
        if not hmac.compare_digest(given, token):
            return JSONResponse({"error": "this segkit app needs its token (?token=...)"}, 401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie("segkit_token", token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(SegprepError)
    async def segprep_error(request: Request, exc: SegprepError):
        return JSONResponse({"error": str(exc)}, 400)

    def sample(index: int) -> int:
        if not 0 <= index < len(workspace.rows):
            raise HTTPException(404, f"no sample {index}; the manifest has {len(workspace.rows)}")
        return index

    # ------------------------------------------------------------------- pages

    @app.get("/", response_class=HTMLResponse)
    def review_page() -> str:
        return _templates.get_template("review.html.j2").render(
            work=str(workspace.work), manifest=workspace.manifest.name, n=len(workspace.rows),
            decisions=DECISIONS)

    @app.get("/model", response_class=HTMLResponse)
    def model_page() -> str:
        test = [int(i) for i in np.flatnonzero(workspace.rows["split"].to_numpy() == "test")[:200]]
        return _templates.get_template("model.html.j2").render(
            runs=list_runs(models.runs), runs_dir=str(models.runs or ""), test=test,
            ids={i: workspace.rows.at[i, "sample_id"] for i in test})

    # ------------------------------------------------------------------- review API

    @app.get("/api/samples")
    def samples() -> dict:
        return {"manifest": str(workspace.manifest), "samples": workspace.summary()}

    @app.get("/api/samples/{index}")
    def sample_detail(index: int) -> dict:
        return workspace.detail(sample(index))

    @app.get("/picture/{index}/{kind}.png")
    def picture(index: int, kind: str, size: int | None = None) -> Response:
        if kind not in ("image", "overlay", "mask", "original"):
            raise HTTPException(404, f"unknown picture {kind!r}; valid: image, overlay, mask, original")
        if size is not None and not 16 <= size <= 4096:
            raise HTTPException(400, "size must be 16-4096 pixels")
        return Response(_png(workspace.picture(sample(index), kind, size)), media_type="image/png",
                        headers={"Cache-Control": "max-age=300"})

    @app.get("/api/decisions")
    def decisions() -> dict:
        return {"path": str(workspace.decisions_path),
                "decisions": [d.__dict__ for d in read_decisions(workspace.decisions_path).values()]}

    @app.post("/api/decisions")
    async def decide(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "send JSON: {sample_id, decision, note}") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "send JSON: {sample_id, decision, note}")
        sample_id, decision = str(body.get("sample_id", "")), str(body.get("decision", ""))
        if workspace.index_of(sample_id) is None:
            raise HTTPException(404, f"no sample {sample_id!r} in {workspace.manifest.name}")
        clear = decision == "clear"
        if not clear and decision not in DECISIONS:
            raise HTTPException(400, f"unknown decision {decision!r}; valid: {', '.join(DECISIONS)}, clear")
        record_decision(workspace.decisions_path, sample_id, decision, who=str(body.get("who", "")),
                        note=str(body.get("note", "")), clear=clear)
        return {"sample_id": sample_id, "decision": "" if clear else decision,
                "path": str(workspace.decisions_path)}

    # ------------------------------------------------------------------- model API

    @app.get("/api/runs")
    def runs_list() -> dict:
        return {"runs": list_runs(models.runs)}

    def _mask_at(prediction, threshold: float | None) -> tuple[float, np.ndarray]:
        """The threshold in use (the run's unless given) and the 0/1 mask it gives."""
        t = prediction.threshold if threshold is None else float(threshold)
        if not 0.0 < t < 1.0:
            raise HTTPException(400, "threshold must be between 0 and 1")
        return t, (prediction.probability > t).astype(np.uint8)

    def _answer(key: str, prediction, threshold: float | None) -> dict:
        from segtrain.metrics import confusion, scores
        from segtrain.predict import CONTOUR_BGR, overlay

        t, mask = _mask_at(prediction, threshold)
        canvas = overlay(prediction.image, mask)  # `segtrain predict`'s overlay, tinted inside
        canvas[mask > 0] = (0.6 * canvas[mask > 0] + 0.4 * np.array(CONTOUR_BGR)).astype(np.uint8)
        dice = (None if prediction.truth is None
                else scores(**confusion(mask, prediction.truth))["dice"])
        return {"id": key, "threshold": t, "default_threshold": prediction.threshold,
                "fg_fraction": float(mask.mean()), "dice": dice,
                "overlay": _data_url(canvas), "mask_url": f"/api/predictions/{key}/mask.png?threshold={t}"}

    @app.post("/api/predict")
    async def predict_upload(run: str = Form(...), file: UploadFile = File(...)) -> dict:
        data = await file.read()
        image = decode_upload(file.filename or "upload", data)
        key, prediction = models.predict(run, image)
        return {"name": Path(file.filename or "upload").name, **_answer(key, prediction, None)}

    @app.post("/api/predict-sample")
    async def predict_sample(request: Request) -> dict:
        try:
            body = await request.json()
            index = sample(int(body.get("index")))
        except (ValueError, TypeError, AttributeError):
            raise HTTPException(400, "send JSON: {run, index} with the sample's position") from None
        row = workspace.rows.iloc[index]
        root = workspace.manifest.parent
        from segprep.shards import binary_mask, read_image, read_mask

        image = read_image(root / row["image_shard"], int(row["image_index"]))
        truth, _ = binary_mask(read_mask(root / row["mask_shard"], int(row["mask_index"])))
        key, prediction = models.predict(str(body.get("run", "")), image, truth)
        return {"name": row["sample_id"], **_answer(key, prediction, None)}

    @app.get("/api/predictions/{key}")
    def prediction_at(key: str, threshold: float) -> dict:
        return _answer(key, models.get(key), threshold)

    @app.get("/api/predictions/{key}/mask.png")
    def prediction_mask(key: str, threshold: float | None = None) -> Response:
        _, mask = _mask_at(models.get(key), threshold)
        return Response(_png(mask * 255), media_type="image/png",
                        headers={"Content-Disposition": f'attachment; filename="mask-{key[:8]}.png"'})

    return app
