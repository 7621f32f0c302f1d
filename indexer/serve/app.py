"""The FastAPI application: the page at /, POST /search, GET /health, GET /images/{id}, and the
OpenAPI schema at /openapi.json.

Every error answers JSON `{"error": "..."}` with a 4xx status, so scripts and the page can show
the reason; a bad request never stops the server. Requests for another Host are refused (see
`hosts`). There is no /docs page: FastAPI's loads Swagger UI from a CDN, and nothing this
server sends may load anything from another origin.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from indexer.serve.hosts import HostCheck, HostRules, host_rules
from indexer.serve.limits import MAX_REQUEST_BYTES, BodyLimits
from indexer.serve.search import (
    MAX_FILES,
    MAX_K,
    ImageNotFoundError,
    Searcher,
    SearchRequestError,
    Upload,
    load_searcher,
)
from retrieval import __version__
from retrieval.cli_logging import log_to_stderr

SETTINGS_ENV = "BLUR_RETRIEVAL_SERVE"  # how `serve --workers N` hands its settings to each worker
# The page may load nothing from anywhere else: no CDN, fonts, or analytics.
PAGE_POLICY = ("default-src 'none'; img-src 'self' blob: data:; style-src 'unsafe-inline'; "
               "script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'")
_ERROR = {"content": {"application/json": {"example": {"error": "what was wrong"}}}}


def create_app(searcher: Searcher, hosts: HostRules) -> FastAPI:
    """An app that answers from `searcher` the requests whose Host `hosts` allows; build it once
    per process."""
    app = FastAPI(title="blur-retrieval", version=__version__, redirect_slashes=False,
                  docs_url=None, redoc_url=None,
                  description="Find images of moving objects from motion-blurred query photos.")
    app.add_middleware(BodyLimits, max_bytes=MAX_REQUEST_BYTES)
    app.add_middleware(HostCheck, rules=hosts)  # the outermost: checked before a body is read
    _add_error_handlers(app)
    page = resources.files("indexer.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/health", summary="What is loaded: model, index size, device")
    def health() -> dict[str, Any]:
        return searcher.health()

    @app.post("/search", summary="Search with one or more uploaded images",
              responses={400: _ERROR, 413: _ERROR, 422: _ERROR})
    def search(
        files: list[UploadFile] | None = File(None, description=f"Query images, at most "
                                              f"{MAX_FILES}, {MAX_REQUEST_BYTES >> 20} MB in all"),
        k: int = Query(10, ge=1, le=MAX_K, description="Hits per query"),
    ) -> Any:
        uploads = [Upload(upload.filename or f"upload {i + 1}", upload.file.read())
                   for i, upload in enumerate(files or [])]
        try:
            return searcher.search(uploads, k)
        except SearchRequestError as error:
            return JSONResponse({"error": str(error), "skipped": error.skipped}, status_code=400)

    @app.get("/images/{image_id}", summary="Thumbnail of a database image, by index id",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}, 404: _ERROR})
    def image(image_id: str) -> Response:
        try:
            data = searcher.thumbnail(image_id)
        except ImageNotFoundError as error:
            return JSONResponse({"error": str(error)}, status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=300"})

    return app


def app_from_environment() -> FastAPI:
    """The app of one `serve --workers N` worker process, configured by its parent (which also
    passes the level of its log messages: a spawned process starts with logging unconfigured)."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    if "log_level" in settings:
        log_to_stderr(settings["log_level"], ("retrieval", "indexer"))
    hosts = host_rules(settings["host"], settings["port"], settings["allowed_hosts"])
    return create_app(load_searcher(settings["index_dir"], settings["device"]), hosts)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = "no such page or endpoint" if error.status_code == 404 else str(error.detail)
        return JSONResponse({"error": message}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
                             for problem in error.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # Starlette re-raises the error after this answer, so the server still logs its traceback.
        return JSONResponse({"error": f"internal error ({type(error).__name__})"}, status_code=500)
