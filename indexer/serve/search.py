"""What the server does for each request, kept free of HTTP so it reads (and tests) like the CLI.

Uploads are decoded by `retrieval.images.load_rgb`, the same guarded decoder the CLI uses, so
an empty file, a non-image, a truncated file or a decompression bomb becomes a per-file message
and never reaches the network. Answers use the JSON of `query --json`, plus what the model's
auxiliary heads predicted about each query (its blur level and streak box).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from indexer.embedder_protocol import EmbedderLike
from indexer.index import ImageSearch, QueryHits
from indexer.models import load_embedder, model_of
from indexer.serve.live import LiveIndex
from indexer.sources import file_path
from retrieval.images import ImageLoadError, load_rgb
from retrieval.sim.severity import blur_level

MAX_FILES = 16  # images per request
MAX_K = 100
MAX_QUERY_PIXELS = 25_000_000  # a 6000x4000 photo fits; decoded it takes 75 MB
THUMBNAIL_SIDE = 256
_ID = re.compile(r"[0-9]{1,18}")  # every such number fits an int64 id


class SearchRequestError(ValueError):
    """A request no image of which can be searched; `skipped` says why, file by file."""

    def __init__(self, message: str, skipped: Sequence[dict[str, str]] = ()) -> None:
        super().__init__(message)
        self.skipped = list(skipped)


class ImageNotFoundError(LookupError):
    """No database image can be shown for the id asked for."""


@dataclass(frozen=True)
class Upload:
    name: str  # the file name the client gave, echoed back as "query"
    data: bytes


class Searcher:
    """One embedder and one live index, loaded once and shared by every request."""

    def __init__(self, live: LiveIndex, embedder: EmbedderLike) -> None:
        live.current().check_fingerprint(embedder.fingerprint, "serve: the loaded checkpoint")
        self.live = live
        self.embedder = embedder
        # One forward pass at a time: each already uses every torch thread, and on CPU
        # interleaved passes only slow each other down.
        self._model_lock = threading.Lock()

    def health(self) -> dict[str, Any]:
        index = self.live.current()
        return {
            "status": "ok",
            "model": {"name": index.manifest.model.get("name"), "fingerprint": index.fingerprint},
            "index": {"directory": str(index.directory), "count": index.count,
                      "generation": index.manifest.generation, "factory": index.manifest.factory},
            "device": {"model": str(getattr(self.embedder, "device", "cpu")), "index": index.device},
            "limits": {"max_files": MAX_FILES, "max_k": MAX_K, "max_query_pixels": MAX_QUERY_PIXELS},
        }

    def search(self, uploads: Sequence[Upload], k: int) -> dict[str, Any]:
        """Answer like `query --json`; raises SearchRequestError when nothing can be searched."""
        if not uploads:
            raise SearchRequestError("upload one or more images in the multipart field 'files'")
        if len(uploads) > MAX_FILES:
            raise SearchRequestError(f"at most {MAX_FILES} images per request, got {len(uploads)}")
        decoded, failed = _decode(uploads)
        answered: list[tuple[int, dict[str, Any]]] = []
        if decoded:
            index = self.live.current()
            with self._model_lock:
                embedded = self.embedder.embed([image for _, image in decoded])
            k = min(k, index.count)
            found = (index.search_embedded(embedded, k, self.embedder.fingerprint) if k else
                     ImageSearch([QueryHits(int(i), []) for i in embedded.ok], embedded.errors))
            failed += [(decoded[i][0], message) for i, message in found.errors]
            for row, result in enumerate(found.results):
                position = decoded[result.item][0]
                answered.append((position, {"query": uploads[position].name,
                                            "hits": [hit.to_json() for hit in result.hits],
                                            **_predictions(embedded, row)}))
        skipped = [{"path": uploads[p].name, "error": message} for p, message in sorted(failed)]
        if not answered:
            raise SearchRequestError("no upload could be searched: "
                                     + "; ".join(entry["error"] for entry in skipped), skipped)
        return {"results": [answer for _, answer in sorted(answered, key=lambda a: a[0])],
                "skipped": skipped}

    def thumbnail(self, image_id: str) -> bytes:
        """JPEG of the database image `image_id` (longest side 256 px), found only via the index."""
        if not _ID.fullmatch(image_id):
            raise ImageNotFoundError(f"no database image has id {image_id!r}: ids are integers >= 0")
        row = self.live.current().rows(np.array([int(image_id)], dtype=np.int64))[0]
        if row is None:
            raise ImageNotFoundError(f"no database image has id {image_id}")
        file = file_path(row)
        if file is None:
            raise ImageNotFoundError(f"id {image_id} is a virtual row: it was rendered by the "
                                     "simulator when indexed and has no file to show")
        try:
            image = load_rgb(file, max_pixels=MAX_QUERY_PIXELS)
        except ImageLoadError as error:
            raise ImageNotFoundError(f"the file of id {image_id} cannot be shown: {error.reason}"
                                     ) from error
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()


def load_searcher(index_dir: str | os.PathLike, device: str) -> Searcher:
    """Open the index read-only and load the model its manifest names, once, at start-up."""
    live = LiveIndex(index_dir, device)
    return Searcher(live, load_embedder(model_of(live.current()), device, batch_size=MAX_FILES))


def _decode(uploads: Sequence[Upload]) -> tuple[list[tuple[int, Image.Image]], list[tuple[int, str]]]:
    """Decoded images with their upload positions, and (position, message) for the others.

    Each upload goes through a private temporary file because the guarded decoder reads files.
    """
    decoded: list[tuple[int, Image.Image]] = []
    failed: list[tuple[int, str]] = []
    with tempfile.TemporaryDirectory(prefix="blur-retrieval-upload-") as folder:
        for position, upload in enumerate(uploads):
            file = Path(folder) / str(position)
            file.write_bytes(upload.data)
            try:
                decoded.append((position, load_rgb(file, max_pixels=MAX_QUERY_PIXELS)))
            except ImageLoadError as error:
                failed.append((position, f"{upload.name}: {error.reason}"))
    return decoded, failed


def _predictions(embedded: Any, row: int) -> dict[str, Any]:
    """Blur level (1..10, as the benchmark labels images) and streak box; null without the head."""
    blur = getattr(embedded, "blur_values", None)
    boxes = getattr(embedded, "boxes", None)
    severity = None if blur is None else min(1.0, max(0.0, 1.0 - float(blur[row])))
    return {
        "blur_level": None if severity is None else blur_level(severity),
        "blur_severity": None if severity is None else round(severity, 4),
        "box": None if boxes is None else dict(zip(("cx", "cy", "w", "h"),
                                                   (round(float(v), 4) for v in boxes[row]))),
    }
