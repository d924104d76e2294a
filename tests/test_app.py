"""`segkit app`: the review and model pages' API over a synthetic WORK (synth -> ingest -> clean)
and a small run, through FastAPI's TestClient; decisions, `segprep clean --decisions`, bad input."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from blobs import untrained_checkpoint
from segapp.server import create_app
from segprep.clean import clean
from segprep.ingest import ingest
from segprep.shards import close_shards

SIZE = 64


def make_run(runs: Path, name: str = "unet-tiny") -> Path:
    """A run folder as `segtrain run` leaves it (best.pt), with an untrained small U-Net."""
    return untrained_checkpoint(runs / name / "best.pt", "unet", SIZE, base_channels=4, depth=2)


@pytest.fixture(scope="module")
def prepared(cleaned, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("app")
    cleaned(root, n=24, noise=0.5, seed=31)
    make_run(root / "runs")
    return root


@pytest.fixture
def site(prepared: Path, tmp_path: Path):
    shutil.copytree(prepared, tmp_path / "site")
    from fastapi.testclient import TestClient

    root = tmp_path / "site"
    with TestClient(create_app(root / "work", root / "runs", device="cpu")) as client:
        client.root = root
        yield client
    close_shards()


def _png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


# ----------------------------------------------------------------------------- review

def test_the_review_api_lists_every_sample_with_findings_and_pictures(site) -> None:
    manifest = pd.read_csv(site.root / "work/manifests/clean.csv", dtype=str, keep_default_na=False)
    samples = site.get("/api/samples").json()["samples"]
    assert [s["sample_id"] for s in samples] == list(manifest["sample_id"])
    assert {s["status"] for s in samples} == set(manifest["status"])
    flagged = [s for s in samples if s["codes"]]
    assert flagged and all(s["status"] in ("ok", "repaired", "excluded") for s in flagged)
    repaired = next(s for s in samples if s["repaired"])
    detail = site.get(f"/api/samples/{repaired['index']}").json()
    assert detail["sample_id"] == repaired["sample_id"] and detail["findings"]
    for kind in ("image", "overlay", "mask", "original"):
        r = site.get(f"/picture/{repaired['index']}/{kind}.png")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        picture = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape[:2] == (detail["height"], detail["width"])
    # the original mask differs from the repaired one: that is what the reviewer compares
    original = site.get(f"/picture/{repaired['index']}/original.png").content
    assert original != site.get(f"/picture/{repaired['index']}/mask.png").content
    thumb = cv2.imdecode(np.frombuffer(site.get("/picture/0/overlay.png?size=32").content, np.uint8), 1)
    assert max(thumb.shape[:2]) == 32
    page = site.get("/")
    assert page.status_code == 200 and "keep" in page.text and "decisions.csv" in page.text
    assert site.get(f"/api/samples/{len(samples)}").status_code == 404
    assert site.get("/picture/0/secret.png").status_code == 404
    assert site.get("/picture/-1/image.png").status_code == 404


def test_decisions_are_written_at_once_and_clean_applies_them(site) -> None:
    samples = site.get("/api/samples").json()["samples"]
    kept = next(s for s in samples if s["status"] == "ok")
    r = site.post("/api/decisions", json={"sample_id": kept["sample_id"], "decision": "exclude",
                                          "note": "blurry\nframe", "who": "tester"})
    assert r.status_code == 200, r.text
    path = site.root / "work/reviews/decisions.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["sample_id", "decision", "who", "when", "note"]
    assert table.to_dict("records")[0] | {"when": ""} == {
        "sample_id": kept["sample_id"], "decision": "exclude", "who": "tester", "when": "",
        "note": "blurry frame"}
    again = site.get("/api/samples").json()["samples"]
    assert again[kept["index"]]["decision"] == "exclude"  # a reload shows it
    assert site.post("/api/decisions", json={"sample_id": samples[1]["sample_id"],
                                             "decision": "keep"}).status_code == 200
    assert site.post("/api/decisions", json={"sample_id": samples[1]["sample_id"],
                                             "decision": "clear"}).status_code == 200
    assert len(pd.read_csv(path)) == 1

    from segprep.cli import main
    # (--force: this WORK is a copy, whose record names the original's input path)
    result = CliRunner().invoke(main, ["clean", str(site.root / "work/manifests/ingest.csv"), "--force",
                                       "--decisions", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 review decision(s) applied" in result.output
    out = pd.read_csv(site.root / "work/manifests/clean.csv", dtype=str, keep_default_na=False)
    row = out.set_index("sample_id").loc[kept["sample_id"]]
    assert row["status"] == "excluded" and row["issues"].endswith("reviewed_exclude")
    # nothing but the decisions file was written by the app: raw files and shards are the
    # stages' own (clean rewrote its outputs above)
    assert sorted(p.name for p in (site.root / "work/reviews").iterdir()) == ["decisions.csv",
                                                                            "decisions.csv.lock"]


def test_a_rerun_of_clean_applies_new_decisions_found_in_its_work(synth, tmp_path: Path) -> None:
    from segprep.decisions import record_decision

    data = synth("kvasir-seg", n=24, noise=0.5, seed=31)
    ingest([data.root], tmp_path / "work", workers=1)
    manifest = tmp_path / "work/manifests/ingest.csv"
    first = clean(manifest, workers=1, progress=False)
    assert clean(manifest, workers=1, progress=False).skipped  # nothing changed: a no-op
    out = pd.read_csv(first.manifest_path, dtype=str, keep_default_na=False)
    excluded = out.loc[out["status"] == "excluded"]
    heuristic = excluded[~excluded["issues"].str.contains("size_mismatch")]
    decisions = tmp_path / "work/reviews/decisions.csv"
    record_decision(decisions, out["sample_id"][0], "exclude")
    for sample_id in excluded["sample_id"]:
        record_decision(decisions, sample_id, "keep")
    again = clean(manifest, workers=1, progress=False)  # finds WORK/reviews/decisions.csv
    assert not again.skipped and not again.rebuilt
    after = pd.read_csv(again.manifest_path, dtype=str, keep_default_na=False).set_index("sample_id")
    assert after.loc[out["sample_id"][0], "status"] == "excluded"
    for sample_id in heuristic["sample_id"]:
        assert after.loc[sample_id, "status"] in ("ok", "repaired")
        assert after.loc[sample_id, "issues"].endswith("reviewed_keep")
    for sample_id in excluded.loc[excluded["issues"].str.contains("size_mismatch"), "sample_id"]:
        assert after.loc[sample_id, "status"] == "excluded"  # unusable: a keep is refused, said so
        assert any("refused" in note for note in again.notes)
    close_shards()


def test_bad_decisions_are_refused_and_nothing_is_lost(site) -> None:
    samples = site.get("/api/samples").json()["samples"]
    for body, status in [({"sample_id": "../../etc/passwd", "decision": "keep"}, 404),
                         ({"sample_id": samples[0]["sample_id"], "decision": "delete"}, 400),
                         (["not", "an", "object"], 400)]:
        r = site.post("/api/decisions", json=body)
        assert r.status_code == status, r.text
    assert not (site.root / "work/reviews/decisions.csv").exists()
    r = site.post("/api/decisions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    # a decisions file edited by hand into garbage: a clear error, the file kept as it is
    path = site.root / "work/reviews/decisions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sample_id,decision\nx,maybe\n")
    r = site.post("/api/decisions", json={"sample_id": samples[0]["sample_id"], "decision": "keep"})
    assert r.status_code == 400 and "line 2: unknown decision 'maybe'" in r.json()["error"]
    assert path.read_text() == "sample_id,decision\nx,maybe\n"
    assert site.get("/api/samples").status_code == 400


def test_concurrent_writers_never_corrupt_the_decisions(site) -> None:
    samples = [s["sample_id"] for s in site.get("/api/samples").json()["samples"]][:20]
    from segprep.decisions import read_decisions, record_decision

    path = site.root / "work/reviews/decisions.csv"
    errors = []

    def write(part: list[str], decision: str) -> None:
        try:
            for sample_id in part:
                record_decision(path, sample_id, decision)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(samples[k::4], ("keep", "exclude")[k % 2]))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    decisions = read_decisions(path)
    assert sorted(decisions) == sorted(samples)


# ----------------------------------------------------------------------------- model

def test_the_model_page_predicts_uploads_and_test_images(site) -> None:
    assert site.get("/api/runs").json()["runs"] == ["unet-tiny"]
    page = site.get("/model")
    assert page.status_code == 200 and "unet-tiny" in page.text
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (90, 70))
    r = site.post("/api/predict", data={"run": "unet-tiny"},
                  files={"file": ("polyp.png", _png(image), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["overlay"].startswith("data:image/png;base64,") and body["dice"] is None
    mask = cv2.imdecode(np.frombuffer(site.get(body["mask_url"]).content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (70, 90) and set(np.unique(mask)) <= {0, 255}
    assert mask.mean() / 255 == pytest.approx(body["fg_fraction"])
    low = site.get(f"/api/predictions/{body['id']}?threshold=0.05").json()
    high = site.get(f"/api/predictions/{body['id']}?threshold=0.95").json()
    assert low["fg_fraction"] >= body["fg_fraction"] >= high["fg_fraction"]
    # the same path as `segtrain predict`: the same mask
    from segtrain.predict import predict
    (site.root / "in").mkdir()
    cv2.imwrite(str(site.root / "in" / "polyp.png"), image)
    predict(site.root / "runs/unet-tiny/best.pt", [site.root / "in"], site.root / "out", device="cpu")
    expected = cv2.imread(str(site.root / "out/masks/polyp.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(mask, expected)
    # a test image of the manifest: Dice against its mask
    test_index = next(s["index"] for s in site.get("/api/samples").json()["samples"] if s["split"] == "test")
    r = site.post("/api/predict-sample", json={"run": "unet-tiny", "index": test_index})
    assert r.status_code == 200 and 0.0 <= r.json()["dice"] <= 1.0


def test_bad_uploads_are_clear_errors(site, tmp_path: Path) -> None:
    def upload(name: str, data: bytes, run: str = "unet-tiny"):
        return site.post("/api/predict", data={"run": run}, files={"file": (name, data, "application/octet-stream")})

    good = _png(np.zeros((20, 20, 3), np.uint8))
    cases = [("notes.txt", b"hello, not an image", "not an image file"),
             ("cut.jpg", cv2.imencode(".jpg", np.full((64, 64, 3), 90, np.uint8))[1].tobytes()[:300],
              "truncated JPEG"),
             ("../../etc/passwd", b"root:x:0:0", "not an image file")]
    # a 20000x20000 PNG: the header says so, the pixels are never decoded
    big = bytearray(good)
    big[16:24] = (20000).to_bytes(4, "big") * 2
    cases.append(("huge.png", bytes(big), "20000x20000"))
    for name, data, message in cases:
        r = upload(name, data)
        assert r.status_code == 400 and message in r.json()["error"], (name, r.text)
        assert "Traceback" not in r.text
    r = upload("ok.png", good, run="../../etc")
    assert r.status_code == 400 and "unknown run" in r.json()["error"]
    assert site.get("/api/predictions/deadbeef?threshold=0.5").status_code == 400
    for body in ({"run": "unet-tiny", "index": "x"}, {"run": "unet-tiny"}, ["x"]):
        assert site.post("/api/predict-sample", json=body).status_code == 400
    assert site.post("/api/predict-sample", json={"run": "unet-tiny", "index": 10**6}).status_code == 404


def test_a_token_guards_every_request_and_other_hosts_need_one(prepared: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(prepared / "work", None, token="s3cret")) as client:
        assert client.get("/api/samples").status_code == 401
        assert client.get("/api/samples", headers={"X-Segkit-Token": "s3cret"}).status_code == 200
        assert client.get("/?token=s3cret").status_code == 200
        assert client.get("/api/samples").status_code == 200  # the cookie set by ?token=
    from segapp.cli import main
    result = CliRunner().invoke(main, ["app", str(prepared / "work"), "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "add --token" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["app", str(prepared / "nowhere")])
    assert result.exit_code != 0 and "does not exist" in result.output
    close_shards()
