"""``harx serve``'s API with the ASGI test client: runs and their mistakes, uploads classified as
``harx predict --json`` does, and what no request may do (paths, oversized or non-video uploads,
a missing token, a burst)."""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import TINY
from harx.extract import make_config, run_extract
from harx.features.errors import InvalidOptionError
from harx.temporal import fit
from test_predict import COLOURS, colour_dataset, write_colour_video

pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from harx.temporal.serve import check_address, create_app  # noqa: E402
from harx.temporal.serve.predicting import BusyError, PredictionService  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The colour dataset of test_predict (3 classes x 6 groups), its cache, a vote run on rgb."""
    root = colour_dataset(tmp_path_factory.mktemp("colours"))
    cache = tmp_path_factory.mktemp("cache") / "colours.h5"
    run_extract(make_config(dataset="folder", root=root, out=cache, streams="rgb", **TINY))
    runs = tmp_path_factory.mktemp("runs")
    run = fit("vote", features=cache, out=runs / "vote", epochs=30, seed=0)
    return {"root": root, "cache": cache, "runs": runs, "run": run.path}


@pytest.fixture(scope="module")
def client(served):
    with TestClient(create_app([served["runs"]], device="cpu")) as c:
        yield c


def _run_id(client) -> str:
    (row,) = client.get("/api/runs").json()["runs"]
    return row["id"]


def test_the_page_and_its_runs(client, served):
    page = client.get("/")
    assert page.status_code == 200 and "<title>harx</title>" in page.text
    assert client.get("/static/app.js").status_code == 200
    row = client.get("/api/runs").json()["runs"][0]
    assert row["head"] == "vote" and row["name"] == "vote" and "path" not in row      # no path goes out
    d = client.get(f"/api/runs/{row['id']}").json()
    assert d["protocol"]["split_protocol"] and d["metrics"]["test"]["accuracy"] is not None
    assert set(d["classes"]) == set(COLOURS)
    assert sum(map(sum, d["confusion"])) == d["metrics"]["test"]["n"]
    assert d["curves"] and {"epoch", "train_loss", "val_accuracy"} <= set(d["curves"][0])
    assert client.get(f"/api/runs/{row['id']}/pictures/curves").headers["content-type"] == "image/png"


def test_a_confusion_cell_lists_its_videos_and_one_plays_with_its_timeline(client):
    rid = _run_id(client)
    everything = client.get(f"/api/runs/{rid}/samples").json()["samples"]
    first = everything[0]
    cell = client.get(f"/api/runs/{rid}/samples", params={"true": first["true"], "predicted": first["predicted"]})
    assert first in cell.json()["samples"]
    assert all(s["true"] == first["true"] and s["predicted"] == first["predicted"] for s in cell.json()["samples"])
    video = client.get(f"/api/runs/{rid}/samples/{first['index']}/video")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"
    timeline = client.get(f"/api/runs/{rid}/samples/{first['index']}/timeline").json()
    assert timeline["label"] in COLOURS and timeline["timeline"]
    assert set(timeline["timeline"][0]["probabilities"]) == set(COLOURS)


def test_an_upload_is_classified_as_harx_predict_does(client, served, tmp_path):
    from harx.temporal.predict import Predictor

    clip = write_colour_video(tmp_path / "mine.mp4", [("green", 30)], seed=91)
    with open(clip, "rb") as f:
        r = client.post("/api/predict", files={"video": ("mine.mp4", f, "video/mp4")})
    assert r.status_code == 200, r.text
    doc = r.json()
    predictor = Predictor(served["run"], device="cpu")
    (expected,) = predictor.predict([clip])
    want = expected.as_dict(predictor.protocol)
    assert doc["label"] == want["label"] == "green" and doc["probabilities"] == want["probabilities"]
    assert {k for k in want if k != "path"} <= set(doc)
    annotated = client.get(doc["annotated"])
    assert annotated.status_code == 200 and annotated.content[4:8] == b"ftyp"
    assert not list(client.app.state.harx.scratch.glob("harx-upload-*"))       # the upload is deleted


@pytest.mark.realdata
def test_a_real_clip_is_classified(client, realdata):
    clip = next((realdata / "kth_walk_run" / "walking").glob("*.avi"), None) or next(realdata.rglob("*.avi"))
    with open(clip, "rb") as f:
        r = client.post("/api/predict", files={"video": (clip.name, f, "video/x-msvideo")})
    assert r.status_code == 200 and r.json()["label"] in COLOURS and r.json()["video"]["n_frames"] > 0


def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_serving(served, tmp_path):
    with TestClient(create_app([served["runs"]], device="cpu", max_upload_mb=0.05)) as c:
        text = c.post("/api/predict", files={"video": ("notes.mp4", b"this is not a video\n" * 20, "video/mp4")})
        assert text.status_code == 422 and "cannot be decoded" in text.json()["error"]
        good = write_colour_video(tmp_path / "g.mp4", [("red", 20)], seed=3).read_bytes()
        cut = c.post("/api/predict", files={"video": ("cut.mp4", good[: len(good) // 3], "video/mp4")})
        assert cut.status_code in (200, 422) and ("error" in cut.json() or cut.json()["note"])
        big = c.post("/api/predict", files={"video": ("big.mp4", b"\0" * 200_000, "video/mp4")})
        assert big.status_code == 413 and "MiB" in big.json()["error"]
        assert not list(c.app.state.harx.scratch.glob("harx-upload-*"))          # nothing left behind
        assert c.post("/api/predict", data={"run": "x"}).status_code in (400, 415)
        assert c.post("/api/predict", content=b"raw", headers={"content-type": "video/mp4"}).status_code == 415
        assert c.get("/api/runs").status_code == 200                              # still serving


@pytest.mark.parametrize("path", ["/api/runs/..%2F..%2Fetc%2Fpasswd", "/api/runs/%2e%2e/pictures/curves",
                                  "/api/runs/ID/pictures/..%2Fmetrics.json", "/api/runs//etc/passwd",
                                  "/api/runs/ID/pictures/%2Fetc%2Fpasswd", "/static/..%2Fapp.py",
                                  "/static/%2e%2e%2f__init__.py", "/api/annotated/..%2F..%2Fetc%2Fpasswd",
                                  "/api/runs/ID/samples/999/video", "/api/runs/000000000000"])
def test_no_request_reaches_a_file_it_does_not_serve(client, path):
    r = client.get(path.replace("ID", _run_id(client)))
    assert r.status_code == 404 and "root:" not in r.text and "import" not in r.text


def test_a_picture_that_links_out_of_its_run_is_not_served(served, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(served["run"], runs / "linked")
    (runs / "linked" / "curves.png").unlink()
    (runs / "linked" / "curves.png").symlink_to("/etc/passwd")
    with TestClient(create_app([runs], device="cpu")) as c:
        rid = c.get("/api/runs").json()["runs"][0]["id"]
        assert c.get(f"/api/runs/{rid}/pictures/curves").status_code == 404


def test_a_token_is_needed_when_one_is_set(served):
    with TestClient(create_app([served["runs"]], device="cpu", token="s3cret")) as c:
        assert c.get("/api/runs").status_code == 401 and "token" in c.get("/api/runs").json()["error"]
        assert c.get("/api/runs", params={"token": "wrong"}).status_code == 401
        assert c.get("/api/runs", params={"token": "s3cret"}).status_code == 200
        assert c.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    with pytest.raises(InvalidOptionError, match="--host 0.0.0.0 lets other machines reach the page.*--token"):
        check_address("0.0.0.0", None)
    assert "reachable from other machines" in check_address("0.0.0.0", "s3cret")
    assert check_address("127.0.0.1", None) is None and check_address("::1", None) is None


def test_a_burst_is_queued_with_a_bound():
    service = PredictionService(workers=1, queue=1)

    async def burst():
        return await asyncio.gather(*(service.run(time.sleep, 0.3) for _ in range(4)), return_exceptions=True)

    results = asyncio.run(burst())
    busy = [r for r in results if isinstance(r, BusyError)]
    assert len(busy) == 2 and all(r is None for r in results if not isinstance(r, BusyError))
    assert service.pending == 0


def test_the_cli_refuses_an_open_address_without_a_token_and_a_taken_port(served):
    import socket

    from typer.testing import CliRunner

    from harx.cli import app

    result = CliRunner().invoke(app, ["serve", "--runs", str(served["runs"]), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "Traceback" not in result.output and "--token" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", "--runs", str(served["runs"]), "--port", str(port)])
    assert result.exit_code == 1 and "choose another --port" in result.output and "open http" not in result.output


def _jpeg(frame) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=90)
    return out.getvalue()


def test_live_frames_over_a_websocket_get_labels(client):
    import struct

    from test_predict import colour_frames

    rid = _run_id(client)
    with client.websocket_connect(f"/api/live?run={rid}") as ws:
        answers = []
        for i, frame in enumerate(colour_frames("blue", 12, seed=8)):
            ws.send_bytes(struct.pack("<d", 100.0 * i) + _jpeg(frame))
            answers.append(ws.receive_json())          # one frame at a time: none dropped
        ws.send_bytes(struct.pack("<d", 2000.0) + b"not an image")
        broken = ws.receive_json()
    assert all(a["label"] in COLOURS and 0 < a["confidence"] <= 1 for a in answers)
    assert answers[-1]["label"] == "blue" and answers[-1]["frames_in_window"] == 12
    assert [a["t"] for a in answers] == [100.0 * i for i in range(12)]     # the frame's time comes back
    assert "not a JPEG" in broken["error"]


def test_live_needs_the_token_too(served):
    from starlette.websockets import WebSocketDisconnect

    with TestClient(create_app([served["runs"]], device="cpu", token="s3cret")) as c:
        with pytest.raises(WebSocketDisconnect):
            with c.websocket_connect("/api/live") as ws:
                ws.receive_json()


def test_other_sites_and_other_host_names_are_refused(served):
    with TestClient(create_app([served["runs"]], device="cpu", allowed_hosts=["127.0.0.1", "localhost"]),
                    base_url="http://127.0.0.1:8000") as c:
        assert c.get("/api/runs").status_code == 200
        rebound = c.get("/api/runs", headers={"host": "attacker.example:8000"})     # DNS rebinding
        assert rebound.status_code == 400 and "answers to" in rebound.json()["error"]
        posted = c.post("/api/predict", files={"video": ("a.mp4", b"x" * 100, "video/mp4")},
                        headers={"origin": "http://attacker.example"})
        assert posted.status_code == 403 and "another site" in posted.json()["error"]
        same = c.get("/api/runs", headers={"origin": "http://127.0.0.1:8000"})
        assert same.status_code == 200


def test_a_cut_off_or_overlong_form_is_refused_and_nothing_is_kept(client):
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()
    cut = client.post("/api/predict", content=head + b"\0" * 1000,
                      headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert cut.status_code == 400 and "ended before" in cut.json()["error"]
    fields = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n".encode()
                      for i in range(20)) + f"--{boundary}--\r\n".encode()
    many = client.post("/api/predict", content=fields,
                       headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert many.status_code == 400 and "more than" in many.json()["error"]
    assert not list(client.app.state.harx.scratch.glob("harx-upload-*"))
