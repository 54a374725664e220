"""The studio's HTTP API and pages (FastAPI; the OpenAPI schema is at ``/openapi.json``).

Security: images, masks and runs are addressed by integers and names from the server's own
index (never a path from the client); static files come from a fixed list of package files;
request bodies are limited in size; with a token every request must carry it (header
``X-Rightfocus-Token``, cookie ``rightfocus_token`` or query ``token``).
"""

from __future__ import annotations

import base64
import secrets
import time
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from rightfocus.engine.config import ConfigError
from rightfocus.feedback.store import ConflictError, MaskError, image_sha256
from rightfocus.feedback.strategies import STRATEGIES
from rightfocus.studio.compare import after_session, comparison
from rightfocus.studio.render import heatmap_png, image_png, png_bytes
from rightfocus.studio.retrain import GUIDANCE_CHOICES, start_retrain
from rightfocus.studio.session import NotInPoolError, StudioSession

__all__ = ["MAX_BODY_BYTES", "create_app"]

MAX_BODY_BYTES = 4 * 1024 * 1024
TOKEN_HEADER = "x-rightfocus-token"
TOKEN_COOKIE = "rightfocus_token"
_STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def _static_files() -> dict[str, bytes]:
    """The package's static files, read once: the only files the server ever sends."""
    folder = resources.files("rightfocus.studio") / "static"
    return {
        p.name: p.read_bytes() for p in folder.iterdir() if p.name.endswith(tuple(_STATIC_TYPES))
    }


class _Guard:
    """ASGI middleware: token check and request body size limit (413)."""

    def __init__(self, app: Any, token: str | None, max_body: int) -> None:
        self.app, self.token, self.max_body = app, token, max_body

    def _authorised(self, scope: dict[str, Any]) -> bool:
        if self.token is None:
            return True
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get(TOKEN_HEADER)
        if given is None:
            for part in headers.get("cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == TOKEN_COOKIE:
                    given = value
        if given is None:
            given = (parse_qs(scope.get("query_string", b"").decode()).get("token") or [None])[0]
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorised(scope):
            await JSONResponse(
                {
                    "detail": "This studio needs its access token: open the URL printed at start "
                    "(it ends in ?token=...), or send the X-Rightfocus-Token header."
                },
                status_code=401,
            )(scope, receive, send)
            return
        for k, v in scope["headers"]:
            if k.lower() == b"content-length" and v.isdigit() and int(v) > self.max_body:
                await self._too_large(scope, receive, send)
                return
        t0 = time.perf_counter()  # reported as a Server-Timing header (app;dur=<ms>)
        # Read the whole body here (at most max_body bytes), then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            size += len(msg.get("body", b""))
            if size > self.max_body:
                await self._too_large(scope, receive, send)
                return
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def timed_send(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                ms = 1000 * (time.perf_counter() - t0)
                msg["headers"] = [
                    *msg.get("headers", []),
                    (b"server-timing", f"app;dur={ms:.2f}".encode()),
                ]
            await send(msg)

        await self.app(scope, replay, timed_send)

    async def _too_large(self, scope: Any, receive: Any, send: Any) -> None:
        await JSONResponse(
            {
                "detail": f"Request body larger than {self.max_body} bytes; send one mask at the "
                "image's own resolution"
            },
            status_code=413,
        )(scope, receive, send)


class MaskUpload(BaseModel):
    """A mask at the image's own resolution: raw bytes, row-major, one byte per pixel, 0 or 1."""

    mask: str = Field(description="base64 of height*width uint8 values in {0, 1}")
    right: str | None = Field(default=None, description="optional 'right reason' mask, same format")
    shape: list[int] = Field(description="[height, width]; must equal the image's")
    dtype: str = Field(default="uint8", description="must be 'uint8'")
    base_version: int = Field(ge=0, description="the version the mask was painted on (0: new)")
    who: str = Field(default="", max_length=100)
    strategy: str = Field(default="", max_length=50)


class RetrainRequest(BaseModel):
    guidance: str = Field(description="rrr, bayes_feedback or counterexamples")
    lam: float | None = Field(default=None, description="lambda (default per method)")
    epochs: int | None = Field(default=None, ge=1, le=10000)


def _b64(arr: np.ndarray | None) -> str | None:
    return (
        None
        if arr is None
        else base64.b64encode(np.ascontiguousarray(arr, np.uint8).tobytes()).decode()
    )


def _decode_mask(data: str, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise HTTPException(400, f"{what} is not valid base64") from None
    if len(raw) != shape[0] * shape[1]:
        raise HTTPException(
            400,
            f"{what} has {len(raw)} bytes; a {shape[0]}x{shape[1]} uint8 mask has "
            f"{shape[0] * shape[1]}",
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def create_app(
    session: StudioSession, token: str | None = None, max_body: int = MAX_BODY_BYTES
) -> Any:
    """The ASGI app serving ``session`` (wrapped in the token / size guard)."""
    app = FastAPI(
        title="rightfocus studio",
        description="Inspect explanations, paint 'don't look here' masks, retrain and compare.",
        version="1",
        # FastAPI's /docs and /redoc pages load their scripts from a CDN; the studio makes no
        # network requests, so only the schema is served (load it into any OpenAPI viewer).
        docs_url=None,
        redoc_url=None,
    )
    static = _static_files()

    def index_or_404(index: int) -> int:
        try:
            return session.check_index(index)
        except NotInPoolError as err:
            raise HTTPException(404, str(err)) from None

    def page(name: str, request: Request) -> Response:
        resp = HTMLResponse(static[name].decode())
        if token is not None and request.query_params.get("token") == token:
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return resp

    @app.get("/", include_in_schema=False)
    def home(request: Request) -> Response:
        return page("index.html", request)

    @app.get("/compare", include_in_schema=False)
    def compare_page(request: Request) -> Response:
        return page("compare.html", request)

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        body = static.get(name)
        if body is None:
            raise HTTPException(404, "no such static file")
        suffix = name[name.rfind(".") :]
        return Response(body, media_type=_STATIC_TYPES[suffix])

    @app.get("/api/session")
    def info() -> dict[str, Any]:
        """The run, its checkpoint, the methods, strategies and guidance one can choose."""
        return {
            "run": session.run_name,
            "checkpoint_sha256": session.checkpoint_sha256,
            "bayesian": session.bayesian,
            "num_classes": int(session.meta.get("num_classes") or (session.labels.max() + 1)),
            "methods": session.methods(),
            "strategies": list(STRATEGIES),
            "guidance": list(GUIDANCE_CHOICES),
            "train_images": len(session.train_indices),
            "annotated": session.store.indices(),
            "who": session.who,
        }

    @app.get("/api/queue")
    def queue(
        strategy: str = "misclassified",
        per_class: bool = False,
        k: int = Query(50, ge=1, le=5000),
        method: str = "saliency",
        method_b: str = "gradcam",
    ) -> dict[str, Any]:
        """Training images ranked by ``strategy`` (never test images)."""
        try:
            items = session.queue(strategy, per_class, k, method, method_b)
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        return {"strategy": strategy, "per_class": per_class, "items": items}

    @app.get("/api/images/{index}")
    def image_info(index: int) -> dict[str, Any]:
        """Label, prediction, probabilities, size and the stored mask (base64, 0/1 bytes)."""
        t0 = time.perf_counter()
        info = session.image_info(index_or_404(index))
        info["mask"], info["right"] = _b64(info["mask"]), _b64(info["right"])
        info["server_ms"] = round(1000 * (time.perf_counter() - t0), 2)
        return info

    @app.get("/api/images/{index}/image.png", response_class=Response)
    def image(index: int) -> Response:
        x = session.item(index_or_404(index))[0]
        return Response(image_png(x, session.meta.get("normalization")), media_type="image/png")

    @app.get("/api/images/{index}/explanation.png", response_class=Response)
    def explanation(index: int, method: str = "saliency") -> Response:
        """Heatmap (RGBA PNG at the image's resolution) of ``method`` for the prediction."""
        i = index_or_404(index)
        t0 = time.perf_counter()
        try:
            attr = session.explanation(i, method)
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        body = heatmap_png(attr)
        ms = 1000 * (time.perf_counter() - t0)
        return Response(body, media_type="image/png", headers={"X-Server-Ms": f"{ms:.2f}"})

    @app.get("/api/images/{index}/uncertainty.png", response_class=Response)
    def uncertainty(index: int, method: str = "saliency") -> Response:
        """Per-pixel std of the attribution over posterior samples (Bayesian models)."""
        i = index_or_404(index)
        try:
            return Response(heatmap_png(session.uncertainty_map(i, method)), media_type="image/png")
        except ValueError as err:
            raise HTTPException(400, str(err)) from None

    @app.get("/api/images/{index}/suggest")
    def suggest(
        index: int, method: str = "saliency", quantile: float = Query(0.9, gt=0, lt=1)
    ) -> dict[str, Any]:
        """The thresholded explanation as a starting mask (base64, 0/1 bytes)."""
        i = index_or_404(index)
        try:
            m = session.suggestion(i, method, quantile)
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        return {"mask": _b64(m), "shape": list(m.shape)}

    @app.get("/api/images/{index}/superpixels")
    def superpixels(index: int, n: int = Query(50, ge=2, le=2000)) -> dict[str, Any]:
        """SLIC superpixel labels (base64 of int32 little-endian, row-major)."""
        seg = session.superpixels(index_or_404(index), n)
        return {
            "labels": base64.b64encode(seg.astype("<i4").tobytes()).decode(),
            "shape": list(seg.shape),
            "count": int(seg.max()) + 1,
        }

    @app.put("/api/images/{index}/mask")
    def save_mask(index: int, body: MaskUpload) -> Any:
        """Save a new mask version; 409 if someone saved after ``base_version``."""
        i = index_or_404(index)
        x = session.item(i)[0]
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if body.dtype != "uint8":
            raise HTTPException(
                400, f"dtype must be 'uint8' (one byte per pixel), got {body.dtype!r}"
            )
        if len(body.shape) != 2 or tuple(body.shape) != (h, w):
            raise HTTPException(
                400, f"mask shape must be [{h}, {w}] (the image's own resolution), got {body.shape}"
            )
        mask = _decode_mask(body.mask, (h, w), "mask")
        right = None if body.right is None else _decode_mask(body.right, (h, w), "right mask")

        try:
            rec = session.store.save(
                i,
                mask,
                right=right,
                base_version=body.base_version,
                image_sha256=image_sha256(x),
                who=body.who or session.who,
                run=session.run_name,
                checkpoint_sha256=session.checkpoint_sha256,
                strategy=body.strategy,
            )
        except ConflictError as err:
            return JSONResponse({"detail": str(err), "current": err.current}, status_code=409)
        except MaskError as err:
            raise HTTPException(400, str(err)) from None
        return rec.to_dict()

    @app.get("/api/images/{index}/history")
    def history(index: int) -> list[dict[str, Any]]:
        return [r.to_dict() for r in session.store.history(index_or_404(index))]

    @app.post("/api/retrain")
    def retrain(body: RetrainRequest) -> dict[str, Any]:
        """Start a run derived from the original config with the stored masks (background)."""
        try:
            job = start_retrain(session, body.guidance, body.lam, body.epochs)
        except (ValueError, ConfigError) as err:
            raise HTTPException(400, str(err)) from None
        return job.status()

    @app.get("/api/retrain/{job}")
    def retrain_status(job: str) -> dict[str, Any]:
        j = session.jobs.get(job)
        if j is None:
            raise HTTPException(404, f"no retrain {job!r} in this session")
        return j.status()

    @app.get("/api/compare/{job}")
    def compare(job: str) -> dict[str, Any]:
        """Metrics before/after and overlap on the annotated images."""
        j = session.jobs.get(job)
        if j is None:
            raise HTTPException(404, f"no retrain {job!r} in this session")
        if j.status()["state"] != "done":
            raise HTTPException(409, f"retrain {job} has not finished yet")
        return comparison(session, j)

    @app.get("/api/compare/{job}/{which}/{index}/explanation.png", response_class=Response)
    def compare_image(job: str, which: str, index: int, method: str = "saliency") -> Response:
        j = session.jobs.get(job)
        if j is None or which not in ("before", "after"):
            raise HTTPException(404, "unknown retrain or side (before/after)")
        i = index_or_404(index)
        s = session if which == "before" else after_session(session, j)
        return Response(heatmap_png(s.explanation(i, method)), media_type="image/png")

    return _Guard(app, token, max_body)


def mask_png(mask: np.ndarray) -> bytes:
    return png_bytes((mask * 255).astype(np.uint8))
