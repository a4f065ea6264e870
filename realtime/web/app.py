"""The web app: one FastAPI application serving a static page and a small JSON API.

Endpoints
  GET  /                      the page (static HTML/CSS/JS from ``static/``; nothing from other hosts)
  GET  /api/info              model, limits, accepted file types, label colours
  POST /api/upload            multipart field ``files`` (one or more). Images are labelled at once
                              (annotated JPEG inline + a faces table); each video becomes a job
  GET  /api/jobs/{id}         a video job's progress, then its result (track table, links)
  GET  /api/jobs/{id}/video   the annotated video (``?download=1`` for an attachment)
  GET  /api/jobs/{id}/jsonl   the per-frame JSONL (the schema of `python -m realtime --jsonl`)
  DELETE /api/jobs/{id}       delete a job's files now (``POST /api/jobs/{id}/delete`` for sendBeacon)
  WS   /api/live              webcam: the page sends JPEG frames, the server answers with faces

Every error is JSON ``{"error": "<one human sentence>"}`` with a fitting status code, and a one-line
warning in the server log. Images never touch the disk here; a video is copied into a per-job
folder under one temporary directory, its input deleted when the job ends and its results when
the user deletes them, they expire, or the server stops.

Untrusted input: an image's pixel count comes from its header before anything is decoded (only
JPEG, PNG, BMP and WebP content is decoded at all), and images are read, decoded and labelled one
at a time, so concurrent uploads queue instead of holding decoded images side by side. Requests
that change anything (POST, DELETE, WebSocket) must come from the app's own page: another
site's ``Origin`` or ``Sec-Fetch-Site`` gets 403. Every response, refusals included, carries the
security headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..classifier import GenderClassifier
from ..errors import UserError
from ..overlay import COLOURS
from ..sources import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
)
from .common import (  # noqa: F401 - re-exported
    MAX_FILES_PER_UPLOAD,
    NO_STORE,
    STATIC_DIR,
    SWEEP_EVERY_S,
    Settings,
    WebError,
    accepted_types,
    decode_upload,
    error_response,
    face_json,
    jpeg_data_url,
    looks_like_video,
    pick_video_format,
    safe_name,
    storage_error,
)
from .guard import Guard, cross_site  # noqa: F401 - re-exported
from .images import StillImages
from .jobs import BadRecordError, Job, VideoJobs, track_table  # noqa: F401
from .live import BrowserCamera, LiveSession  # noqa: F401

log = logging.getLogger(__name__)

# --- the application -------------------------------------------------------------------------------
class WebState:
    """Everything the app holds: models, jobs, the temporary folder."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            self.root = Path(tempfile.mkdtemp(prefix="face-gender-web-", dir=settings.workdir))
        except OSError as exc:
            where = settings.workdir or tempfile.gettempdir()
            raise UserError(f"cannot create the app's temporary folder in {where}: "
                            f"{exc.strerror or exc}") from exc
        try:
            # One classifier for the whole app (uploads, every webcam connection, video jobs; it is
            # thread-safe): loaded here, so a bad --model fails at start.
            self.classifier = GenderClassifier(settings.model, num_threads=settings.threads)
            self.images = StillImages(settings, self.classifier)
            self.jobs = VideoJobs(settings, self.root, pick_video_format(self.root), self.classifier)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.live_sessions = 0
        self.live_lock = threading.Lock()
        # Also removed at exit or garbage collection when the app never ran (or never shut down).
        self._remove_root = weakref.finalize(self, shutil.rmtree, str(self.root), True)

    def info(self) -> dict[str, Any]:
        clf = self.classifier
        s = self.settings
        return {"model": clf.model_path.name, "input_size": clf.input_size,
                "max_upload_mb": s.max_upload_mb, "max_upload_bytes": s.max_upload_bytes,
                "max_video_seconds": s.max_video_seconds, "keep_minutes": s.keep_minutes,
                "image_extensions": sorted(IMAGE_EXTENSIONS), "video_extensions": sorted(VIDEO_EXTENSIONS),
                "video_format": self.jobs.format.description, "video_playable": self.jobs.format.playable,
                "colours": {k: "#{2:02x}{1:02x}{0:02x}".format(*v) for k, v in COLOURS.items()}}

    def handle_upload(self, upload: UploadFile, blur: bool = False) -> dict[str, Any]:
        name = safe_name(upload.filename)
        suffix = Path(name).suffix.lower()
        if suffix not in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
            raise WebError(415, f"{name}: this file type is not accepted; upload {accepted_types()}")
        size = upload.size if upload.size is not None else 0
        if size > self.settings.max_upload_bytes:
            raise WebError(413, f"{name} is {size / 2**20:.1f} MB; uploads are limited to "
                                f"{self.settings.max_upload_mb:g} MB")
        if size == 0:
            raise WebError(422, f"{name} is empty (0 bytes)")
        if suffix in IMAGE_EXTENSIONS:
            return self.images.label(name, upload.file, blur)
        return self.jobs.status(self.jobs.submit(name, upload.file, blur))

    def open_live(self, blur: bool = False) -> LiveSession | None:
        with self.live_lock:
            if self.live_sessions >= self.settings.max_live_sessions:
                return None
            self.live_sessions += 1
        try:
            return LiveSession(self.settings, self.classifier, blur)
        except BaseException:
            with self.live_lock:
                self.live_sessions -= 1
            raise

    def close_live(self, session: LiveSession) -> None:
        session.close()
        with self.live_lock:
            self.live_sessions -= 1

    def close(self) -> None:
        if not self._remove_root.alive:
            return
        self.jobs.close()
        self.images.close()
        self._remove_root()
        log.info("removed the temporary folder %s", self.root)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, with its models loaded (raises :class:`~realtime.errors.ModelError` for a bad model)."""
    settings = settings or Settings()
    state = WebState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def sweep_forever() -> None:
            while True:
                await asyncio.sleep(SWEEP_EVERY_S)
                state.jobs.sweep()

        sweeper = asyncio.create_task(sweep_forever())
        try:
            yield
        finally:
            sweeper.cancel()
            await asyncio.to_thread(state.close)

    app = FastAPI(title="Face gender (local)", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.web = state
    app.add_middleware(Guard, settings=settings)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(WebError)
    async def on_web_error(request: Request, exc: WebError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):  # the upload could not be spooled to the temporary folder
            log.error("an upload could not be stored in the temporary folder: %s", cause)
            stored = storage_error("the upload", cause)
            return error_response(stored.status, f"{stored.message}; try again later, or a smaller file")
        message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, f"{message}: {request.method} {request.url.path}")

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "bad request: send a multipart form with the files in the field 'files'")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/info")
    def info() -> JSONResponse:
        return _json(state.info())

    @app.post("/api/upload")
    def upload(files: Annotated[list[UploadFile], File()], blur: bool = False) -> JSONResponse:
        if len(files) > MAX_FILES_PER_UPLOAD:
            raise WebError(400, f"{len(files)} files in one upload; send at most {MAX_FILES_PER_UPLOAD}")
        items, statuses = [], []
        for upload in files:
            try:
                items.append(state.handle_upload(upload, blur))
                statuses.append(200)
            except WebError as exc:
                log.warning("%s", exc.message)
                items.append({"name": safe_name(upload.filename), "error": exc.message})
                statuses.append(exc.status)
            except Exception as exc:  # one line in the log, a sentence in the page
                log.error("upload %s failed: %s: %s", upload.filename, type(exc).__name__, exc,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                items.append({"name": safe_name(upload.filename),
                              "error": f"processing failed ({type(exc).__name__}: {exc})"})
                statuses.append(500)
        if all(s != 200 for s in statuses):  # nothing worked: the request failed, with the first reason
            return _json({"error": items[0]["error"], "items": items}, statuses[0])
        return _json({"items": items})

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> JSONResponse:
        return _json(state.jobs.status(state.jobs.get(job_id)))

    @app.get("/api/jobs/{job_id}/video")
    def job_video(job_id: str, download: bool = False) -> FileResponse:
        job = state.jobs.get(job_id)
        path = state.jobs.result_file(job_id, "video")
        return FileResponse(path, media_type=state.jobs.format.media_type,
                            filename=f"{job.stem}.labelled{path.suffix}",
                            content_disposition_type="attachment" if download else "inline",
                            headers=NO_STORE)

    @app.get("/api/jobs/{job_id}/jsonl")
    def job_jsonl(job_id: str) -> FileResponse:
        job = state.jobs.get(job_id)
        path = state.jobs.result_file(job_id, "jsonl")
        return FileResponse(path, media_type="application/x-ndjson", filename=f"{job.stem}.faces.jsonl",
                            headers=NO_STORE)

    @app.delete("/api/jobs/{job_id}")
    @app.post("/api/jobs/{job_id}/delete")  # navigator.sendBeacon can only POST
    def job_delete(job_id: str) -> JSONResponse:
        state.jobs.delete(job_id)
        return _json({"deleted": job_id})

    @app.websocket("/api/live")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        blur = ws.query_params.get("blur") in ("1", "true")
        session = await asyncio.to_thread(state.open_live, blur)
        if session is None:
            await ws.send_json({"error": f"{state.settings.max_live_sessions} webcams are already connected; "
                                         "stop one and try again"})
            await ws.close(code=1013)
            return
        try:
            await _serve_live(ws, session)
        finally:
            await asyncio.to_thread(state.close_live, session)

    return app


async def _serve_live(ws: WebSocket, session: LiveSession) -> None:
    """Answer each binary (JPEG) message with the faces in it, until the page disconnects."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            await ws.send_json({"error": "send webcam frames as binary JPEG messages"})
            continue
        try:
            reply = await asyncio.to_thread(session.process, data)
        except Exception as exc:  # the page shows it; the session goes on
            log.error("webcam frame failed: %s: %s", type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            reply = {"error": f"processing failed ({type(exc).__name__}: {exc})"}
        if "error" in reply:
            log.warning("webcam: %s", reply["error"])
        await ws.send_json(reply)


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=NO_STORE)


__all__ = ["Settings", "WebError", "create_app", "pick_video_format"]
