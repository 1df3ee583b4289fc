"""The web app's JSON API: answers equal to the library's, and every bad input a clear 4xx."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import select
import shutil
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from octlens.app import Limits, ScanService, background_server, create_app
from octlens.app.server import example_scans
from octlens.app.uploads import display_name
from octlens.data.images import load_grayscale
from octlens.errors import OctlensError
from octlens.explain import GradCAM
from octlens.training.run import Run

LOCAL = "http://127.0.0.1"  # the test client's default Host, "testserver", is refused


@pytest.fixture(scope="module")
def service(tiny_resnet_run, tiny_vit_run) -> ScanService:
    return ScanService([tiny_resnet_run, tiny_vit_run], precision="fp32")


@pytest.fixture(scope="module")
def scans(tiny_data) -> list[Path]:
    return sorted((tiny_data / "test").glob("*/*.jpeg"))


@pytest.fixture
def client(service, tiny_data):
    app = create_app(service, Limits(max_upload_mb=1, max_files=8), example_scans(tiny_data))
    with TestClient(app, base_url=LOCAL) as test_client:
        yield test_client


def _files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_predict_gives_each_run_s_probabilities_as_the_library_computes_them(
    client, scans, tiny_resnet_run, tiny_vit_run
):
    response = client.post("/api/predict", files=_files((scans[0].name, scans[0].read_bytes())))
    assert response.status_code == 200
    (entry,) = response.json()["files"]
    assert entry["name"] == scans[0].name and entry["not_oct"] == []
    assert [r["run"] for r in entry["runs"]] == ["resnet", "vit"]
    for answer, folder in zip(entry["runs"], (tiny_resnet_run, tiny_vit_run), strict=True):
        run = Run.load(folder)
        image = run.eval_transform()(load_grayscale(scans[0], run.img_size))[None]
        with torch.no_grad():
            expected = torch.softmax(run.model()(image), dim=1)[0]
        got = torch.tensor([answer["probabilities"][c] for c in run.classes])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        assert answer["predicted"] == run.classes[int(expected.argmax())]
        assert answer["target"] == answer["predicted"]
        for panel in answer["maps"]:
            assert 0 <= panel["shares"]["off_retina"] <= 1 and 0 <= panel["shares"]["corners"] <= 1
    # CNN methods for the CNN, ViT methods for the ViT
    assert [m["method"] for m in entry["runs"][0]["maps"]] == [
        "gradcam",
        "gradcam++",
        "hirescam",
        "layercam",
    ]
    assert {"rollout", "legrad"} <= {m["method"] for m in entry["runs"][1]["maps"]}


def test_explain_returns_the_explainer_s_raw_map_and_pngs_for_the_chosen_class(
    client, scans, tiny_resnet_run
):
    response = client.post(
        "/api/explain",
        files=_files(("scan.jpeg", scans[1].read_bytes())),
        data={"target": "DME", "raw": "true", "opacity": "0.3"},
    )
    assert response.status_code == 200
    answer = response.json()["files"][0]["runs"][0]
    assert answer["target"] == "DME"
    panel = next(m for m in answer["maps"] if m["method"] == "gradcam")
    raw = np.load(io.BytesIO(base64.b64decode(panel["raw_npy"])))
    run = Run.load(tiny_resnet_run)
    image = run.eval_transform()(load_grayscale(scans[1], run.img_size))[None]
    expected = GradCAM(run.model(), precision="fp32")(image, [run.classes.index("DME")]).raw[0]
    np.testing.assert_allclose(raw, expected.numpy(), atol=1e-5)
    for key in ("overlay_png", "heatmap_png"):
        data = base64.b64decode(panel[key].removeprefix("data:image/png;base64,"))
        assert Image.open(io.BytesIO(data)).size == (run.img_size, run.img_size)
    outline = base64.b64decode(answer["retina_png"].split(",", 1)[1])
    assert np.asarray(Image.open(io.BytesIO(outline)))[..., 3].any()  # the retina was found


def test_files_sent_together_share_one_batch(client, scans):
    files = _files(*((scan.name, scan.read_bytes()) for scan in scans[:6]))
    response = client.post("/api/predict", files=files)
    assert response.status_code == 200 and len(response.json()["files"]) == 6
    assert max(client.app.state.batcher.batch_sizes) > 1


def _bomb_png(side: int = 100_000) -> bytes:
    """A PNG whose header declares side x side pixels (10 gigapixels) and holds almost nothing."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_bad_uploads_are_4xx_with_a_message_naming_the_file_and_the_server_keeps_serving(
    client, scans
):
    jpeg = scans[0].read_bytes()
    png = _png(np.asarray(Image.open(scans[0]).convert("L")))
    cases = {
        "notes.jpeg": (b"these are not pixels", 422, "not a readable image"),
        "cut.jpeg": (jpeg[: len(jpeg) // 2], 422, "truncated"),
        "cut.png": (png[: len(png) // 2], 422, "cut.png"),
        "bomb.png": (_bomb_png(), 422, "decompression bomb"),
        "huge.jpeg": (jpeg + b"\0" * (1024 * 1024), 413, "1 MB upload limit"),
        "empty.png": (b"", 422, "empty file"),
    }
    for name, (data, status, words) in cases.items():
        response = client.post("/api/predict", files=_files((name, data)))
        assert response.status_code == status, (name, response.text)
        detail = response.json()["detail"]
        assert detail.startswith(f"{name}: ") and words in detail, detail
        assert "\n" not in detail and "/tmp" not in detail
    too_many = _files(*((f"{n}.jpeg", jpeg) for n in range(9)))
    response = client.post("/api/predict", files=too_many)
    assert response.status_code == 413 and "at most 8" in response.json()["detail"]
    assert client.post("/api/predict", data={"x": "1"}).status_code == 422  # no files
    response = client.post("/api/predict", files=_files(("a.jpeg", jpeg)), data={"target": "X"})
    assert response.status_code == 422 and "not one of" in response.json()["detail"]
    response = client.post("/api/explain", files=_files(("a.jpeg", jpeg)), data={"opacity": "2"})
    assert response.status_code == 422
    # still serving
    assert client.post("/api/predict", files=_files(("ok.jpeg", jpeg))).status_code == 200


def test_a_bad_file_among_good_ones_gets_its_own_error(client, scans):
    files = _files(("good.jpeg", scans[0].read_bytes()), ("bad.jpeg", b"junk"))
    response = client.post("/api/predict", files=files)
    assert response.status_code == 200
    good, bad = response.json()["files"]
    assert good["runs"] and bad["error"].startswith("bad.jpeg: not a readable image")


def test_16_bit_rgba_cmyk_tiff_and_bmp_are_read_like_the_loader_reads_them(client, scans):
    gray = np.asarray(Image.open(scans[0]).convert("L"))

    def probabilities(name: str, data: bytes) -> dict:
        response = client.post("/api/predict", files=_files((name, data)))
        assert response.status_code == 200, response.text
        return response.json()["files"][0]["runs"][0]["probabilities"]

    eight_bit = probabilities("gray.png", _png(gray))
    deep = _png(gray.astype(np.uint16) * 257)
    assert Image.open(io.BytesIO(deep)).mode.startswith("I")
    sixteen = probabilities("deep.png", deep)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    assert sixteen == pytest.approx(eight_bit, abs=1e-6)
    assert probabilities("rgba.png", _png(rgba)) == pytest.approx(eight_bit, abs=1e-6)
    buffer = io.BytesIO()
    Image.fromarray(gray).convert("CMYK").save(buffer, format="JPEG", quality=95)
    assert set(probabilities("cmyk.jpg", buffer.getvalue())) == set(eight_bit)
    for image_format in ("TIFF", "BMP"):  # lossless: the PNG's answer exactly
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, format=image_format)
        answer = probabilities(f"scan.{image_format.lower()}", buffer.getvalue())
        assert answer == pytest.approx(eight_bit, abs=1e-6)


def test_hostile_file_names_are_cleaned_and_never_used_as_paths(client, scans, tmp_path):
    hostile = "../../<img src=x onerror=alert(1)>\\..\\evil<script>.jpeg"
    response = client.post("/api/predict", files=_files((hostile, scans[0].read_bytes())))
    name = response.json()["files"][0]["name"]
    assert response.status_code == 200
    assert not set("/\\<>") & set(name) and name.endswith(".jpeg")
    assert display_name("....") == "upload" and len(display_name("a" * 500)) == 80


def test_every_response_carries_the_content_security_policy(client):
    for path in ("/", "/static/app.js", "/api/runs", "/missing"):
        policy = client.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    page = client.get("/").text
    assert "<script>" not in page and "http" not in page.lower().replace("http-equiv", "")


def test_runs_examples_and_schema(client, tiny_data):
    info = client.get("/api/runs").json()
    assert info["classes"] == ["CNV", "DME", "DRUSEN", "NORMAL"]
    folders = sorted((tiny_data / "test").iterdir())
    shown = sum(min(2, len(list(folder.glob("*.jpeg")))) for folder in folders)
    assert len(info["examples"]) == shown  # up to two per class of the test split
    assert {e["class"] for e in info["examples"]} == set(info["classes"])
    first = client.get("/api/examples/0")
    assert first.status_code == 200 and first.content == example_scans(tiny_data)[0].read_bytes()
    assert client.get(f"/api/examples/{shown}").status_code == 404
    assert client.get("/api/examples/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    assert client.get("/static/..%2F__init__.py").status_code == 404
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/explain", "/api/runs"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404


def test_a_photo_gets_an_out_of_distribution_warning(client):
    from skimage import data

    response = client.post("/api/predict", files=_files(("cat.png", _png(data.chelsea()))))
    warnings = response.json()["files"][0]["not_oct"]
    assert any("colour" in reason for reason in warnings)


def test_a_folder_that_is_not_a_run_is_an_error_before_serving(tmp_path, tiny_resnet_run):
    with pytest.raises(OctlensError, match=str(tmp_path)):
        ScanService([tmp_path])
    with pytest.raises(
        OctlensError, match=r"none of the methods \['rollout'\] applies to a ResNet"
    ):
        ScanService([tiny_resnet_run], methods=["rollout"])


def test_lrp_attnlrp_and_a_named_layer_reach_each_run_they_apply_to(tiny_resnet_run, tiny_vit_run):
    """LRP explains the ResNet and AttnLRP the ViT, each left out for the other; ``layer``
    moves the ResNet's CAMs to ``layer3`` (and a method that explains no layer is refused before
    any run loads)."""
    service = ScanService(
        [tiny_resnet_run, tiny_vit_run], methods=["gradcam", "lrp", "attnlrp"], precision="fp32"
    )
    explainers = [list(run.explainers) for run in service.runs]
    assert explainers == [["gradcam", "lrp"], ["gradcam", "attnlrp"]]
    layered = ScanService([tiny_resnet_run], methods=["gradcam"], precision="fp32", layer="layer3")
    resnet = layered.runs[0]
    assert resnet.explainers["gradcam"].target_layer is resnet.model.layer3  # type: ignore[attr-defined]
    with pytest.raises(OctlensError, match="lrp does not explain one layer"):
        ScanService([tiny_resnet_run], methods=["lrp"], layer="layer3")


def test_fifty_concurrent_uploads_are_all_answered_correctly_in_batches(service, scans):
    """Load: 50 uploads at once against a real server on a loopback port."""
    app = create_app(service, Limits(max_files=4))
    with TestClient(app, base_url=LOCAL) as single:
        expected = {
            scan.name: single.post(
                "/api/predict", files=_files((scan.name, scan.read_bytes()))
            ).json()["files"][0]["runs"][0]["probabilities"]
            for scan in scans[:5]
        }

    async def hammer(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            uploads = [scans[n % 5] for n in range(50)]
            return await asyncio.gather(
                *(
                    http.post("/api/predict", files=_files((s.name, s.read_bytes())))
                    for s in uploads
                )
            )

    with background_server(app) as url:
        responses = asyncio.run(hammer(url))
    assert [r.status_code for r in responses] == [200] * 50
    for response in responses:
        entry = response.json()["files"][0]
        assert entry["runs"][0]["probabilities"] == pytest.approx(expected[entry["name"]], abs=1e-5)
    assert max(app.state.batcher.batch_sizes) > 1


def test_a_full_queue_answers_503_and_recovers(service, scans):
    """Memory stays bounded: past ``max_pending`` waiting uploads, the server says to retry."""
    app = create_app(service, max_batch=1, max_wait=0.0, max_pending=2)
    jpeg = scans[0].read_bytes()

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            return await asyncio.gather(
                *(http.post("/api/predict", files=_files(("a.jpeg", jpeg))) for _ in range(12))
            )

    with background_server(app) as url:
        responses = asyncio.run(burst(url))
        after = httpx.post(f"{url}/api/predict", files=_files(("a.jpeg", jpeg)), timeout=60)
    codes = [r.status_code for r in responses]
    assert 503 in codes and 200 in codes and set(codes) <= {200, 503}
    busy = next(r for r in responses if r.status_code == 503)
    assert "try again" in busy.json()["detail"]
    assert after.status_code == 200


def test_edited_or_broken_run_files_are_notes_on_the_card_not_a_crash(tiny_resnet_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_resnet_run, run)
    metrics = run / "eval" / "test" / "metrics.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text('{"n": 8, "accuracy": "<b>all of them</b>", "macro_auc": NaN}')
    (summary,) = [r.summary for r in ScanService([run]).runs]
    assert "test" not in summary  # never shown as numbers
    assert summary["test_error"].startswith(f"{metrics}: not an evaluation this octlens can read")
    metrics.write_text("[1, 2]")
    (summary,) = [r.summary for r in ScanService([run]).runs]
    assert "test" not in summary and "Input should be a valid dictionary" in summary["test_error"]
    metrics.write_text('{"n": ')
    (summary,) = [r.summary for r in ScanService([run]).runs]
    assert "test" not in summary and str(metrics) in summary["test_error"]


def test_an_eps_named_jpeg_never_reaches_ghostscript_and_a_volume_is_refused(client, monkeypatch):
    from PIL import EpsImagePlugin

    opened: list[str] = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append("eps"))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EOF\n"
    frames = [Image.fromarray(np.full((24, 24), n * 60, np.uint8)) for n in range(2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    cases = {
        "scan.jpeg": (eps, "scan.jpeg: not a readable image (octlens reads JPEG, PNG, TIFF, BMP)"),
        "volume.tif": (buffer.getvalue(), "volume.tif: 2 frames (an OCT volume?)"),
    }
    for name, (data, message) in cases.items():
        response = client.post("/api/predict", files=_files((name, data)))
        assert response.status_code == 422 and response.json()["detail"].startswith(message)
    assert opened == []


def test_an_empty_map_says_so_instead_of_0_percent_off_the_retina(
    client, scans, service, monkeypatch
):
    size = service.runs[0].run.img_size

    def nothing(images: torch.Tensor, targets: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(raw=torch.zeros(len(images), size, size))

    monkeypatch.setitem(service.runs[0].explainers, "gradcam", nothing)
    response = client.post("/api/explain", files=_files(("a.jpeg", scans[0].read_bytes())))
    assert response.status_code == 200, response.text
    maps = {m["method"]: m for m in response.json()["files"][0]["runs"][0]["maps"]}
    assert maps["gradcam"]["shares"] is None
    assert maps["gradcam"]["warning"].startswith("no attention (empty map)")
    assert maps["hirescam"]["shares"] is not None  # the other maps are untouched


def test_an_example_swapped_for_a_link_or_another_file_is_not_served(service, scans, tmp_path):
    folder = tmp_path / "data" / "test" / "DME"
    folder.mkdir(parents=True)
    first, second = folder / "a.jpeg", folder / "b.jpeg"
    shutil.copy(scans[0], first)
    shutil.copy(scans[1], second)
    (folder / "c.jpeg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n")  # not a scan: left out
    secret = tmp_path / "secret.jpeg"
    shutil.copy(scans[2], secret)
    with pytest.warns(UserWarning, match=r"example left out: .*c\.jpeg: not a readable image"):
        app = create_app(service, examples=example_scans(tmp_path / "data", per_class=3))
    with TestClient(app, base_url=LOCAL) as client:
        assert [e["name"] for e in client.get("/api/runs").json()["examples"]] == [
            "a.jpeg",
            "b.jpeg",
        ]
        assert client.get("/api/examples/0").content == scans[0].read_bytes()
        first.chmod(0o600)  # the same bytes: a new change time, still the same file
        (tmp_path / "hard-link.jpeg").hardlink_to(first)
        assert client.get("/api/examples/0").content == scans[0].read_bytes()
        first.unlink()
        first.symlink_to(secret)
        linked = client.get("/api/examples/0")
        assert linked.status_code == 404 and "a link (not followed)" in linked.json()["detail"]
        second.unlink()
        shutil.copy(secret, second)
        other = client.get("/api/examples/1")
        assert other.status_code == 404 and "another file" in other.json()["detail"]
    second.unlink()
    os.mkfifo(second)  # nothing ever writes to it: opening it must not wait for a writer
    answered: list[int] = []

    def ask() -> None:
        answered.append(TestClient(app, base_url=LOCAL).get("/api/examples/1").status_code)

    reader = threading.Thread(target=ask, daemon=True)
    reader.start()
    reader.join(timeout=20)
    assert answered == [404]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--port", "70000"], "--port 70000: a port number from 1 to 65535"),
        (["--port", "0"], "--port 0: a port number"),
        (["--max-upload-mb", "nan"], "--max-upload-mb nan: a number of MB above 0"),
        (["--max-upload-mb", "inf"], "--max-upload-mb inf: a number of MB above 0"),
        (
            ["--max-upload-mb", "1e12"],
            "--max-upload-mb 1000000000000.0: a number of MB above 0 and at most 1024",
        ),
        (["--max-files", "0"], "--max-files 0: a whole number, at least 1"),
    ],
)
def test_bad_serve_settings_are_one_line_errors_before_the_runs_load(
    monkeypatch, capsys, tmp_path, option, message
):
    import uvicorn

    from octlens.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("the server started"))
    monkeypatch.setattr(sys, "argv", ["octlens", "serve", str(tmp_path), *option])
    with pytest.raises(SystemExit) as exit_:
        main()  # tmp_path is no run: the setting must be refused before the runs load
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1


def test_a_500_carries_the_security_headers(service, scans, monkeypatch):
    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "analyse", broken)
    app = create_app(service)
    with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as client:
        response = client.post("/api/predict", files=_files(("a.jpeg", scans[0].read_bytes())))
    assert response.status_code == 500
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "a bug" not in response.text


def test_writes_from_other_origins_and_other_host_names_are_refused(client, scans):
    """A page on another site can POST a form here without a preflight, and a rebinding name
    reaches 127.0.0.1 with its own Host: neither gets anything, and nothing is scored."""
    jpeg = _files(("a.jpeg", scans[0].read_bytes()))
    scored = len(client.app.state.batcher.batch_sizes)
    refused = [
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "http://127.0.0.1:8001"}, 403),  # another port: another origin
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Host": "rebind.example:8000", "Origin": "http://rebind.example:8000"}, 400),
        ({"Host": "testserver"}, 400),
        ([("Host", "127.0.0.1"), ("Host", "rebind.example")], 400),
        ({"Host": "127.0.0.1@rebind.example"}, 400),
    ]
    for headers, status in refused:
        response = client.post("/api/predict", files=jpeg, headers=headers)
        assert response.status_code == status, (headers, response.text)
        assert "\n" not in response.json()["detail"]
        assert "script-src 'self'" in response.headers["content-security-policy"]
    assert len(client.app.state.batcher.batch_sizes) == scored
    rebound = client.get("/api/runs", headers={"Host": "rebind.example:8000"})
    assert rebound.status_code == 400 and "resnet" not in rebound.text
    assert "rebind.example" in rebound.json()["detail"]
    embedded = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}  # an <img>
    assert client.get("/api/examples/0", headers=embedded).status_code == 403
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}  # a link to the app
    assert client.get("/", headers=link).status_code == 200
    own = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}  # the page itself
    assert client.post("/api/predict", files=jpeg, headers=own).status_code == 200
    for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
        assert client.get("/api/runs", headers={"Host": host}).status_code == 200, host


def _chunked_post(
    url: str, chunks: Iterator[bytes], wait: float, end: bool = True
) -> tuple[str, int, bool]:
    """POST ``chunks`` with no Content-Length on a raw socket, stopping once the server answers
    (or a send fails), and ending the body if ``end`` and all were sent; the answer's status
    line and body, how many body bytes were sent, and whether the server then closed."""
    parts = urlsplit(url)
    head = (
        f"POST /api/predict HTTP/1.1\r\nHost: {parts.netloc}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    )
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=wait) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            except OSError:
                break
            sent += len(chunk)
        else:
            if end:
                sock.sendall(b"%x\r\n%b\r\n0\r\n\r\n" % (len(_CLOSE), _CLOSE))
        answer = _http_answer(sock)
        sock.settimeout(5)
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
    return answer, sent, closed


def _http_answer(sock: socket.socket) -> str:
    """The status line and body of the HTTP answer waiting on ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0].decode() + " " + body.decode()


_CLOSE = b"\r\n--b--\r\n"


def _upload_chunks(count: int, size: int = 2**20, pause: float = 0.0) -> Iterator[bytes]:
    yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.jpeg"\r\n\r\n'
    for _ in range(count):
        time.sleep(pause)
        yield b"\0" * size


def test_a_chunked_upload_is_cut_off_at_the_limit_and_a_stalled_one_at_the_deadline(service):
    """With no Content-Length, a 1 GB body was spooled to disk in full before the 413; a body
    that stops coming, or trickles in, held its connection for as long as it liked."""
    limits = Limits(max_upload_mb=1, max_files=1, body_seconds=2, idle_seconds=0.5)
    app = create_app(service, limits)
    with background_server(app) as url:
        answer, sent, closed = _chunked_post(url, _upload_chunks(512), wait=60)
        assert answer.startswith("HTTP/1.1 413") and sent < 128 * 2**20
        assert "stopped reading at" in answer and closed  # the rest is not read either
        answer, _, closed = _chunked_post(url, _upload_chunks(1), wait=10, end=False)  # stalls
        assert answer.startswith("HTTP/1.1 408") and "no data for 0.5 s" in answer and closed
        trickle = _upload_chunks(100, size=16, pause=0.25)  # 16 bytes every 0.25 s
        answer, sent, _ = _chunked_post(url, trickle, wait=10)
        assert answer.startswith("HTTP/1.1 408") and "not all there after 2 s" in answer
        assert sent < 100 * 16
