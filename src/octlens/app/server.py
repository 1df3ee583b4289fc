"""The web app: a page and a small JSON API over :class:`~octlens.app.service.ScanService`.

Routes (the schema is served at ``/openapi.json``; there is no docs page, which would load
scripts from a CDN):

- ``GET /``: the page; ``GET /static/app.js`` and ``/static/app.css``: its script and style,
  served from the package (nothing is fetched from outside, so the app works offline);
- ``GET /api/runs``: the runs, their classes, methods, test metrics and audit verdicts;
- ``GET /api/examples/{n}``: example scan ``n`` of the runs' data (an index into a list made at
  start: no route reads a path a request names);
- ``POST /api/predict``: multipart, one or more ``files`` and an optional ``target`` class; per
  file and run the class probabilities, the predicted class, and each map's region shares;
- ``POST /api/explain``: the same, with each map as PNG images (overlay, colour map, the scan
  and the retina outline) and, with ``raw=true``, the raw map as ``.npy`` bytes.

Uploads are decoded in a small thread pool, then scored by the models in the batcher's worker
thread, batched with the uploads of the requests that arrive with them. A bad file gets a 4xx
with a one-line message naming it (or, among good files, an ``error`` in its entry); the server
keeps serving. Every request first passes :class:`~octlens.app.guard.Guard`: only this server's
names and page, a body bounded in size and time, and the security headers (a
Content-Security-Policy that allows scripts from this server only) on every response.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import io
import math
import os
import warnings
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from octlens.app.batching import Busy, MicroBatcher
from octlens.app.guard import LOOPBACK, Guard, served_names
from octlens.app.service import Panel, RunAnswer, ScanService
from octlens.app.uploads import UploadedScan, UploadError, display_name, read_upload
from octlens.data.images import UnreadableImageError, check_image, is_image_file
from octlens.errors import OctlensError, arg
from octlens.viz.overlays import CMAP, overlay_rgb

MEDIA_TYPES = {".jpeg": "image/jpeg", ".jpg": "image/jpeg", ".png": "image/png",
               ".tif": "image/tiff", ".tiff": "image/tiff", ".bmp": "image/bmp"}  # fmt: skip
_STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
DECODERS = 2  # threads decoding uploads (Pillow and numpy release the GIL)
# Past this, reading one upload would ask Python for the whole size at once (a MemoryError).
MAX_UPLOAD_MB = 1024


@dataclass(frozen=True)
class Limits:
    """What one request may hold: ``max_upload_mb`` per file, ``max_files`` per request,
    ``body_seconds`` for its body to arrive and ``idle_seconds`` between its bytes. Checked when
    made, so a bad setting is a one-line error before the server starts."""

    max_upload_mb: float = 20.0
    max_files: int = 16
    body_seconds: float = 60.0
    idle_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not _number_in(self.max_upload_mb, 0, MAX_UPLOAD_MB):
            raise OctlensError(
                f"{arg('max_upload_mb')} {self.max_upload_mb}: a number of MB above 0 and at most "
                f"{MAX_UPLOAD_MB}"
            )
        whole = isinstance(self.max_files, int) and not isinstance(self.max_files, bool)
        if not whole or self.max_files < 1:
            raise OctlensError(f"{arg('max_files')} {self.max_files}: a whole number, at least 1")
        for name in ("body_seconds", "idle_seconds"):
            if not _number_in(getattr(self, name), 0, math.inf):
                raise OctlensError(f"{name} {getattr(self, name)}: a number of seconds above 0")

    @property
    def max_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_body(self) -> int:
        """The most bytes a request's body may hold: every file at its limit, and 1 MB of form."""
        return self.max_files * self.max_bytes + 1024 * 1024

    def __str__(self) -> str:
        files = "1 file" if self.max_files == 1 else f"{self.max_files} files"
        return f"{files} of {self.max_upload_mb:g} MB"


def _number_in(value: object, low: float, high: float) -> bool:
    """``value`` is a real number with ``low < value <= high`` (never NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return low < value <= high and math.isfinite(value)


def create_app(
    service: ScanService,
    limits: Limits | None = None,
    examples: Sequence[Path] = (),
    max_batch: int = 16,
    max_wait: float = 0.01,
    max_pending: int = 256,
    hosts: Sequence[str] = LOOPBACK,
) -> FastAPI:
    """The app serving ``service``; ``examples`` are scan files the page offers to try (those
    that cannot be read are left out with a warning). ``max_batch``, ``max_wait`` and
    ``max_pending`` set the :class:`MicroBatcher`; ``hosts`` are the names it answers to besides
    the loopback names (see :mod:`octlens.app.guard` for the other checks of every request).
    The routes (:data:`routes`) find the service, the limits and the examples in ``app.state``."""
    limits = limits or Limits()

    def work(items: list[tuple[UploadedScan, str | None]]) -> list[list[RunAnswer]]:
        """Score a batch of decoded uploads (each with its target class or None)."""
        return service.analyse([scan for scan, _ in items], [target for _, target in items])

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Uploads are decoded in their own threads, so the next batch is decoded while the
        # model works on this one.
        with ThreadPoolExecutor(DECODERS, thread_name_prefix="octlens-decode") as decoders:
            async with MicroBatcher(work, max_batch, max_wait, max_pending) as batcher:
                app.state.batcher, app.state.decoders = batcher, decoders
                yield

    app = FastAPI(
        title="octlens", lifespan=lifespan, docs_url=None, redoc_url=None, version="0.1.0"
    )
    app.state.service, app.state.limits = service, limits
    app.state.examples = [
        found for path in examples if (found := Example.found(path, limits.max_bytes))
    ]
    app.add_middleware(
        Guard,
        hosts=served_names("", hosts),
        max_body=limits.max_body,
        body_seconds=limits.body_seconds,
        idle_seconds=limits.idle_seconds,
        limit_text=str(limits),
    )
    app.include_router(routes)
    return app


#: The app's routes; each reads what it serves from ``request.app.state`` (see :func:`create_app`).
routes = APIRouter()


@routes.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    return HTMLResponse(_static_text("index.html"))


@routes.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    if name not in _STATIC:
        raise HTTPException(404, "no such file")
    return Response(_static_text(name), media_type=_STATIC[name])


@routes.get("/api/runs")
def runs(request: Request) -> dict[str, Any]:
    """The runs being served: classes, methods, test metrics and audit verdicts."""
    service: ScanService = request.app.state.service
    limits: Limits = request.app.state.limits
    return {
        "classes": service.classes,
        "runs": [
            {"name": r.name, "methods": list(r.explainers), **r.summary} for r in service.runs
        ],
        "examples": [
            {"id": n, "name": example.path.name, "class": example.path.parent.name}
            for n, example in enumerate(request.app.state.examples)
        ],
        "limits": {"max_upload_mb": limits.max_upload_mb, "max_files": limits.max_files},
    }


@routes.get("/api/examples/{number}")
def example(number: int, request: Request) -> Response:
    """Example scan ``number`` (from ``/api/runs``)."""
    shown: list[Example] = request.app.state.examples
    if not 0 <= number < len(shown):
        raise HTTPException(404, f"no example {number}")
    try:
        data = shown[number].read()
    except OSError as error:
        raise HTTPException(404, f"example {number}: {error.strerror}") from None
    return Response(data, media_type=MEDIA_TYPES.get(shown[number].path.suffix.lower()))


@routes.post("/api/predict")
async def predict(request: Request) -> JSONResponse:
    """Probabilities, predicted class and each map's region shares, per file and run."""
    _, entries = await _answers(request)
    return JSONResponse({"files": [_entry_json(entry, pictures=False) for entry in entries]})


@routes.post("/api/explain")
async def explain(request: Request) -> JSONResponse:
    """As ``/api/predict``, with each map as PNG overlays (``raw=true``: also ``.npy``)."""
    form_fields, entries = await _answers(request)
    raw = str(form_fields.get("raw", "")).lower() in ("1", "true", "yes")
    opacity = _opacity(form_fields.get("opacity"))
    return JSONResponse(
        {
            "files": [
                _entry_json(entry, pictures=True, raw=raw, opacity=opacity) for entry in entries
            ]
        }
    )


async def _answers(request: Request) -> tuple[Any, list[dict[str, Any]]]:
    """The request's form, and each file with its answers (or its error); a 4xx if no file
    could be used."""
    batcher = request.app.state.batcher
    with batcher.coming(1):  # from arrival to queue, so a burst is batched whole
        form_fields, entries, readable = await _decoded_uploads(request)
        target = form_fields.get("target") or None
        futures = []
        try:  # queued together, so a request's files share a batch
            for _, scan in readable:
                futures.append(batcher.enqueue((scan, target)))
        except Busy as error:
            for future in futures:  # the batcher skips them
                future.cancel()
            raise HTTPException(503, str(error)) from None
    results = await asyncio.gather(*futures)
    for (entry, _), result in zip(readable, results, strict=True):
        entry["answers"] = result
    if all("error" in entry for entry in entries):
        status = max(entry["status"] for entry in entries)
        raise HTTPException(status, "; ".join(entry["error"] for entry in entries))
    return form_fields, entries


async def _decoded_uploads(request: Request) -> tuple[Any, list[dict[str, Any]], list[Any]]:
    """The form, an entry per file, and the (entry, scan) pairs that could be decoded."""
    service: ScanService = request.app.state.service
    limits: Limits = request.app.state.limits
    form_fields = await _form(request, limits)
    try:  # the bytes are read at once; the form's spooled files are closed on every path
        uploads = await _read_uploads(form_fields, limits, service.classes)
    finally:
        await form_fields.close()
    entries: list[dict[str, Any]] = []
    pending = []
    loop = asyncio.get_running_loop()
    for name, data in uploads:
        if len(data) > limits.max_bytes:
            too_large = f"{name}: larger than the {limits.max_upload_mb:g} MB upload limit"
            entries.append({"name": name, "status": 413, "error": too_large})
            continue
        entries.append({"name": name})
        decoding = loop.run_in_executor(
            request.app.state.decoders, _decode, data, name, service.sizes
        )
        pending.append((entries[-1], decoding))
    readable = []
    decoded_all = await asyncio.gather(*(future for _, future in pending))
    for (entry, _), decoded in zip(pending, decoded_all, strict=True):
        if isinstance(decoded, UploadError):
            entry.update(status=422, error=str(decoded))
        else:
            entry["not_oct"] = decoded.not_oct
            readable.append((entry, decoded))
    return form_fields, entries, readable


def _decode(data: bytes, name: str, sizes: set[int]) -> UploadedScan | UploadError:
    """The upload decoded at the runs' input sizes, or its error (returned, not raised, so one
    bad file among several is an entry, not the request's failure)."""
    try:
        return read_upload(data, name, sizes)
    except UploadError as error:
        return error


async def _form(request: Request, limits: Limits) -> Any:
    """The multipart form (the body's size and deadline are the :class:`Guard`'s)."""
    try:
        form_fields = await request.form(max_files=limits.max_files, max_fields=32)
    except StarletteHTTPException as error:  # Starlette's multipart limits
        if "Too many files" in str(error.detail):
            raise HTTPException(
                413, f"too many files: at most {limits.max_files} per request"
            ) from None
        raise HTTPException(400, f"not a multipart upload ({error.detail})") from None
    return form_fields


async def _read_uploads(
    form_fields: Any, limits: Limits, classes: list[str]
) -> list[tuple[str, bytes]]:
    """(clean name, bytes) of each uploaded file, reading at most one byte past the limit;
    422 for an unknown target or no files."""
    target = form_fields.get("target") or None
    if target is not None and target not in classes:
        raise HTTPException(422, f"target '{target}': not one of {classes}")
    files = [f for f in form_fields.getlist("files") if isinstance(f, UploadFile)]
    if not files:
        raise HTTPException(422, "no files: send one or more scans as 'files'")
    return [(display_name(f.filename), await f.read(limits.max_bytes + 1)) for f in files]


def _opacity(value: object) -> float:
    if value in (None, ""):
        return 0.6
    try:
        opacity = float(str(value))
    except ValueError:
        raise HTTPException(422, f"opacity '{value}': a number from 0 to 1") from None
    if not 0.0 <= opacity <= 1.0:
        raise HTTPException(422, f"opacity {opacity:g}: a number from 0 to 1")
    return opacity


def _entry_json(
    entry: dict[str, Any], pictures: bool, raw: bool = False, opacity: float = 0.6
) -> dict[str, Any]:
    if "error" in entry:
        return {"name": entry["name"], "error": entry["error"]}
    out = {"name": entry["name"], "not_oct": entry["not_oct"], "runs": []}
    for answer in entry["answers"]:
        run: dict[str, Any] = {
            "run": answer.run,
            "probabilities": answer.probabilities,
            "predicted": answer.predicted,
            "target": answer.target,
            "area_shares": answer.areas,
            "maps": [_panel_json(answer, panel, pictures, raw, opacity) for panel in answer.panels],
        }
        if pictures:
            run["scan_png"] = _png(answer.display)
            run["retina_png"] = _png(_outline_rgba(answer.retina))
        out["runs"].append(run)
    return out


def _panel_json(
    answer: RunAnswer, panel: Panel, pictures: bool, raw: bool, opacity: float
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "method": panel.method,
        "shares": panel.shares,
        "warning": panel.warning,
    }
    if pictures:
        scaled = _unit(panel.raw)
        out["overlay_png"] = _png(np.clip(overlay_rgb(answer.display, scaled, opacity), 0, 1))
        out["heatmap_png"] = _png(_heatmap_rgba(scaled))
    if raw:
        buffer = io.BytesIO()
        np.save(buffer, panel.raw.astype(np.float32))
        out["raw_npy"] = base64.b64encode(buffer.getvalue()).decode()
    return out


def _unit(raw: np.ndarray) -> np.ndarray:
    low, high = float(raw.min()), float(raw.max())
    return (raw - low) / max(high - low, 1e-12)


def _heatmap_rgba(scaled: np.ndarray) -> np.ndarray:
    """The map in the overlay's colours with alpha = value: the page multiplies it by its slider,
    which gives exactly :func:`~octlens.viz.overlays.overlay_rgb`'s blend."""
    rgba = colormaps[CMAP](scaled)
    rgba[..., 3] = scaled
    return rgba


def _outline_rgba(mask: np.ndarray) -> np.ndarray:
    edge = mask & ~ndimage.binary_erosion(mask, border_value=1)
    rgba = np.zeros((*mask.shape, 4))
    rgba[edge] = (0.2, 0.9, 1.0, 1.0)
    return rgba


def _png(pixels: np.ndarray) -> str:
    """A data URL of ``pixels`` in [0, 1]: (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA."""
    array = np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _static_text(name: str) -> str:
    return resources.files("octlens.app").joinpath("static", name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Example:
    """An example scan pinned at start: its resolved path and the file found there. The route
    reads only that file: a symlink swapped in later is not followed, and another file put in
    its place is not served."""

    path: Path
    identity: tuple[int, int, int, int]  # (device, inode, size, modified): see _identity

    @classmethod
    def found(cls, path: Path, max_bytes: int) -> Example | None:
        """``path`` resolved and checked as a scan an upload could be; None, with a warning
        naming it, if it cannot be one."""
        try:
            resolved = path.resolve(strict=True)
            check_image(resolved)
            stat = resolved.stat()
        except (OSError, UnreadableImageError) as error:
            warnings.warn(f"example left out: {error}", UserWarning, stacklevel=2)
            return None
        if stat.st_size > max_bytes:
            warnings.warn(f"example left out: {path}: over the upload limit", stacklevel=2)
            return None
        return cls(resolved, _identity(stat))

    def read(self) -> bytes:
        """The file's bytes if it is still the one found at start; OSError (with a reason in
        ``strerror``) if not."""
        try:
            # O_NONBLOCK: a FIFO swapped in opens at once (then fails the identity check)
            # instead of holding a server thread until something writes to it.
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
            descriptor = os.open(self.path, flags)
        except OSError as error:
            if error.errno == errno.ELOOP:
                reason = f"{self.path.name} is now a link (not followed)"
                raise OSError(error.errno, reason) from None
            raise OSError(error.errno, f"{self.path.name} is no longer on disk") from None
        with os.fdopen(descriptor, "rb") as handle:
            stat = os.fstat(handle.fileno())
            if _identity(stat) != self.identity:
                raise OSError(errno.ESTALE, f"{self.path.name} is another file than at start")
            return handle.read()


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one file from another put in its place (whose inode number may be reused) or
    from itself rewritten: its size and contents' time. Not the change time, which a ``chmod``,
    a hard link or a move away and back also sets, the bytes untouched."""
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def example_scans(root: Path | None, per_class: int = 2) -> list[Path]:
    """A few scans of each class of ``root``'s test (else val, else top-level) split."""
    if root is None or not root.is_dir():
        return []
    split = next((root / s for s in ("test", "val") if (root / s).is_dir()), root)
    found: list[Path] = []
    for folder in sorted(p for p in split.iterdir() if p.is_dir()):
        scans = sorted(p for p in folder.iterdir() if is_image_file(p))
        found += scans[:per_class]
    return found
