"""`blur-retrieval serve`: the HTTP API and page on a tiny real index, bad input, reloads."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import struct
import sys
import threading
import zlib
from urllib.parse import unquote

import anyio
import numpy as np
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from benchmark.commands.main import main
from indexer.api import build_index, open_index, source_from_folder, source_from_paths
from indexer.errors import FingerprintMismatchError
from indexer.serve import live as live_module
from indexer.serve.limits import MAX_REQUEST_BYTES
from indexer.serve.search import MAX_FILES, ImageNotFoundError, load_searcher
from retrieval.embed import load_embedder
from retrieval.model import BlurAwareNet, save_checkpoint

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from indexer.serve.app import SETTINGS_ENV, app_from_environment, create_app  # noqa: E402
from indexer.serve.connections import HeadDeadlineProtocol, uvicorn_settings  # noqa: E402
from indexer.serve.hosts import host_rules  # noqa: E402

IMAGES = 8


def _picture(seed: int) -> Image.Image:
    """A distinct little scene: a coloured block on a noisy background."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
    top, left = rng.integers(0, 24), rng.integers(0, 32)
    pixels[top:top + 20, left:left + 28] = rng.integers(60, 256, 3, dtype=np.uint8)
    return Image.fromarray(pixels)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb_png(side: int = 100_000) -> bytes:
    """A side x side PNG in a few dozen bytes (a decompression bomb): only its header is read."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A checkpoint with blur and box heads, and an index of IMAGES files, a virtual row and a
    row whose file was deleted after indexing."""
    root = tmp_path_factory.mktemp("serve")
    (root / "db").mkdir()
    for i in range(IMAGES):
        _picture(i).save(root / "db" / f"img{i}.png")
    _picture(99).save(root / "db" / "gone.png")
    torch.manual_seed(0)
    save_checkpoint(root / "net", BlurAwareNet("test_byobnet", embedding_dim=16).eval(),
                    {"image_size": [32, 48]})
    embedder = load_embedder(str(root / "net"), device="cpu", workers=0)
    index, _ = build_index(source_from_folder(root / "db"), embedder, root / "idx", device="cpu",
                           progress=False, model_name=str(root / "net"))
    virtual = pa.table({"path": pa.array([None], pa.string())})
    index.add_vectors(embedder.embed([_picture(50)]).vectors, virtual, embedder.fingerprint)
    index.save()
    (root / "db" / "gone.png").unlink()
    return root


@pytest.fixture(scope="module")
def searcher(tiny):
    return load_searcher(tiny / "idx", "cpu")


def _client(searcher, **options) -> TestClient:
    """A client of an app listening on serve's default address, the Host its requests name."""
    return TestClient(create_app(searcher, host_rules("127.0.0.1", 8000)), base_url="http://127.0.0.1:8000",
                      **options)


@pytest.fixture(scope="module")
def client(searcher):
    with _client(searcher) as test_client:
        yield test_client


def _ids_by_name(tiny) -> dict[str, int]:
    table = open_index(tiny / "idx", device="cpu").metadata.to_pylist()
    return {("virtual" if row["path"] is None else row["path"].rsplit("/", 1)[-1]): row["id"]
            for row in table}


def _upload(*named: tuple[str, bytes], k: int | None = None, client) -> object:
    params = {} if k is None else {"k": k}
    return client.post("/search", params=params,
                       files=[("files", (name, data, "image/png")) for name, data in named])


def test_an_uploaded_database_image_finds_itself_first_with_its_blur_and_box(client, tiny):
    response = _upload(("img3.png", (tiny / "db" / "img3.png").read_bytes()), k=3, client=client)
    assert response.status_code == 200
    answer = response.json()
    assert answer["skipped"] == [] and len(answer["results"]) == 1
    result = answer["results"][0]
    assert result["query"] == "img3.png" and len(result["hits"]) == 3
    assert result["hits"][0]["path"] == str(tiny / "db" / "img3.png")
    assert result["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [hit["rank"] for hit in result["hits"]] == [1, 2, 3]
    assert 1 <= result["blur_level"] <= 10 and 0 <= result["blur_severity"] <= 1
    assert set(result["box"]) == {"cx", "cy", "w", "h"}
    assert all(0 < value < 1 for value in result["box"].values())


def test_hits_are_the_ones_query_json_prints(client, tiny):
    query = tiny / "db" / "img5.png"
    printed = CliRunner().invoke(main, ["query", str(tiny / "idx"), str(query), "-k", "4", "--json",
                                        "--device", "cpu", "-q"])
    assert printed.exit_code == 0, printed.output
    served = _upload(("img5.png", query.read_bytes()), k=4, client=client).json()
    assert served["results"][0]["hits"] == json.loads(printed.output)["results"][0]["hits"]


def test_k_defaults_to_10_and_is_capped_by_the_index_size(client, tiny):
    result = _upload(("a.png", _png(_picture(1))), client=client).json()["results"][0]
    assert len(result["hits"]) == IMAGES + 2  # every row: 8 images, the deleted file, the virtual row


def test_bad_files_among_good_ones_are_skipped_and_the_rest_answered(client, tiny):
    good = (tiny / "db" / "img0.png").read_bytes()
    response = _upload(("good.png", good), ("notes.png", b"just text\n"), ("empty.png", b""),
                       ("bomb.png", _bomb_png()), ("cut.png", good[: len(good) // 2]), client=client)
    assert response.status_code == 200
    answer = response.json()
    assert [result["query"] for result in answer["results"]] == ["good.png"]
    errors = {entry["path"]: entry["error"] for entry in answer["skipped"]}
    assert list(errors) == ["notes.png", "empty.png", "bomb.png", "cut.png"]
    assert "not an image" in errors["notes.png"] and "empty file" in errors["empty.png"]
    assert "too large" in errors["bomb.png"] and "truncated or corrupt" in errors["cut.png"]
    assert all(error.startswith(f"{path}: ") for path, error in errors.items())


@pytest.mark.parametrize(("data", "reason"), [
    (b"%PDF-1.4 not a picture", "not an image"),
    (b"", "empty file"),
    (_bomb_png(), "image too large: Image size (10000000000 pixels) exceeds limit"),  # Pillow's guard
    (_bomb_png(8000), "image too large: 8000x8000 pixels exceeds limit of 25000000"),  # the server's
], ids=["not-an-image", "empty", "bomb", "over-25-megapixels"])
def test_a_single_bad_upload_is_a_400_with_its_reason(client, data, reason):
    response = _upload(("q.png", data), client=client)
    assert response.status_code == 400
    assert reason in response.json()["error"] and "q.png" in response.json()["error"]
    assert client.get("/health").status_code == 200


def test_no_upload_or_too_many_uploads_is_a_400(client):
    nothing = client.post("/search")
    assert nothing.status_code == 400 and "field 'files'" in nothing.json()["error"]
    many = _upload(*[(f"{i}.png", b"x") for i in range(MAX_FILES + 1)], client=client)
    assert many.status_code == 400 and f"at most {MAX_FILES}" in many.json()["error"]


def test_oversized_bodies_are_refused_whether_declared_or_not(client):
    declared = _upload(("big.png", b"\0" * (MAX_REQUEST_BYTES + 1)), client=client)
    assert declared.status_code == 413 and "20 MB" in declared.json()["error"]
    chunks = (b"\0" * (1 << 20) for _ in range(MAX_REQUEST_BYTES // (1 << 20) + 1))
    streamed = client.post("/search", content=chunks,
                           headers={"content-type": "multipart/form-data; boundary=x"})
    assert streamed.status_code == 413
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("k", ["0", "101", "-3", "ten", "2.5"])
def test_a_bad_k_is_a_422_naming_k(client, k):
    response = client.post(f"/search?k={k}", files=[("files", ("a.png", _png(_picture(1))))])
    assert response.status_code == 422 and "k" in response.json()["error"]


def test_a_thumbnail_is_a_small_jpeg_of_the_indexed_file(client, tiny):
    response = client.get(f"/images/{_ids_by_name(tiny)['img2.png']}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as thumbnail:
        assert thumbnail.format == "JPEG" and max(thumbnail.size) <= 256


def test_virtual_deleted_and_unknown_ids_are_404_with_a_reason(client, tiny):
    ids = _ids_by_name(tiny)
    virtual = client.get(f"/images/{ids['virtual']}")
    assert virtual.status_code == 404 and "virtual row" in virtual.json()["error"]
    gone = client.get(f"/images/{ids['gone.png']}")
    assert gone.status_code == 404 and "file not found" in gone.json()["error"]
    unknown = client.get("/images/12345")
    assert unknown.status_code == 404 and unknown.json() == {"error": "no database image has id 12345"}


TRAVERSALS = [
    "/images/../../etc/passwd", "/images/..%2f..%2fetc%2fpasswd", "/images/%2e%2e%2f",
    "/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/images/-1", "/images/99999999999999999999999",
    "/images/abc", "/images/1.5", "/images/0x1", "/images/%00", "/images/1%2f..%2f..%2fetc%2fpasswd",
    "/images/%2fetc%2fpasswd", "/images/", "/images", "/images/..", "/images/0/../../../etc/passwd",
]


def _raw_get(app, path: str) -> tuple[int, dict[bytes, bytes], bytes]:
    """GET `path` exactly as given, straight into the ASGI app (HTTP clients tidy '..' away)."""
    raw = path.encode()
    scope = {"type": "http", "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": unquote(path), "raw_path": raw, "root_path": "", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1:8000")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 8000)}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


@pytest.mark.parametrize("path", TRAVERSALS)
def test_image_urls_never_leak_a_file(client, path):
    status, headers, body = _raw_get(client.app, path)
    assert status == 404 and headers[b"content-type"] == b"application/json"
    assert "error" in json.loads(body) and b"root:" not in body
    tidied = client.get(path)  # as a browser sends it: '..' resolved first, perhaps to the page at /
    assert not tidied.headers["content-type"].startswith("image/") and b"root:" not in tidied.content


@pytest.mark.parametrize("given", ["../../etc/passwd", "/etc/passwd", "-1", "1/../2", " 1", "1e3"])
def test_thumbnails_take_only_index_ids(searcher, given):
    with pytest.raises(ImageNotFoundError, match="ids are integers"):
        searcher.thumbnail(given)


def test_a_checkpoint_retrained_in_place_is_refused_naming_the_model_and_the_way_out(tmp_path):
    """An upgrade gives a shipped name new weights: serve must refuse the old index the way
    query does, naming the model that built it and what to do."""
    for i in range(2):
        _picture(i).save(tmp_path / f"img{i}.png")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "net", BlurAwareNet("test_byobnet", embedding_dim=16).eval(),
                    {"image_size": [32, 48]})
    embedder = load_embedder(str(tmp_path / "net"), device="cpu", workers=0)
    build_index(source_from_paths([tmp_path / "img0.png", tmp_path / "img1.png"]), embedder,
                tmp_path / "idx", device="cpu", progress=False, model_name=str(tmp_path / "net"))
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "net", BlurAwareNet("test_byobnet", embedding_dim=16).eval(),
                    {"image_size": [32, 48]})
    with pytest.raises(FingerprintMismatchError,
                       match=r"^serve: the loaded checkpoint: .*\(model '.*net'\).*build the index again"):
        load_searcher(tmp_path / "idx", "cpu")


def test_health_names_the_model_the_index_and_the_device(client, searcher):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["index"]["count"] == IMAGES + 2
    assert health["model"]["fingerprint"] == searcher.embedder.fingerprint
    assert health["device"] == {"model": "cpu", "index": "cpu"}


def test_the_page_is_self_contained_and_accessible(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)  # no external asset
    assert '<label for="file">' in page and 'id="file"' in page and 'type="file"' in page
    assert 'aria-live="polite"' in page
    assert all("alt=" in tag for tag in re.findall(r"<img[^>]*>", page))
    assert "picture.alt = description" in page  # hit thumbnails get alt text too


def test_the_openapi_schema_lists_the_endpoints_and_no_page_loads_another_origin(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/search", "/health", "/images/{image_id}"} <= set(paths)
    for page in ("/docs", "/redoc"):  # FastAPI's load Swagger UI and ReDoc from a CDN
        assert client.get(page).status_code == 404


@pytest.mark.parametrize("path", ["/", "/health", "/images/0", "/openapi.json"])
@pytest.mark.parametrize("host", ["attacker.example:8000", "attacker.example", "127.0.0.1:9999", "",
                                  "localhost:80"])
def test_a_request_for_another_host_is_refused(client, path, host):
    answer = client.get(path, headers={"Host": host})
    assert answer.status_code == 400 and "not an address of this server" in answer.json()["error"]
    assert not answer.headers["content-type"].startswith("image/")


def test_a_search_for_another_host_is_refused_before_its_upload_is_read(client):
    answer = client.post("/search", headers={"Host": "attacker.example:8000"},
                         files=[("files", ("a.png", b"x" * (MAX_REQUEST_BYTES + 1), "image/png"))])
    assert answer.status_code == 400, "the Host is checked first, not the body's size"


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "[::1]:8000"])
def test_the_loopback_names_on_the_listening_port_are_answered(client, host):
    assert client.get("/health", headers={"Host": host}).status_code == 200


@pytest.fixture
def copied(tiny, tmp_path):
    """A private copy of the index, free to be changed by a test."""
    shutil.copytree(tiny / "idx", tmp_path / "idx")
    return tmp_path / "idx"


def _add_image(index_dir, picture_path, embedder) -> None:
    writer = open_index(index_dir, mmap=False, device="cpu")
    writer.add(source_from_paths([str(picture_path)]), embedder, progress=False)
    writer.save()


def test_searches_while_another_writer_adds_see_one_generation_then_the_next(tiny, copied, tmp_path):
    searcher = load_searcher(copied, "cpu")
    client = _client(searcher)
    new = tmp_path / "new.png"
    _picture(123).save(new)
    old_ids = set(_ids_by_name(tiny).values())
    other_process_model = load_embedder(str(tiny / "net"), device="cpu", workers=0)
    writer = threading.Thread(target=_add_image, args=(copied, new, other_process_model))
    writer.start()
    while writer.is_alive():
        answer = _upload(("q.png", _png(_picture(2))), client=client)
        assert answer.status_code == 200
        hits = answer.json()["results"][0]["hits"]
        assert len(hits) == 10 and {hit["id"] for hit in hits} <= old_ids | {max(old_ids) + 1}
    writer.join()
    found = _upload(("new.png", new.read_bytes()), k=1, client=client).json()["results"][0]["hits"][0]
    assert found["path"] == str(new) and found["id"] == max(old_ids) + 1
    assert client.get("/health").json()["index"]["count"] == IMAGES + 3


def test_the_old_generation_answers_until_the_new_one_is_loaded(tiny, copied, tmp_path, monkeypatch):
    searcher = load_searcher(copied, "cpu")
    client = _client(searcher)
    _picture(7).save(tmp_path / "new.png")
    _add_image(copied, tmp_path / "new.png", searcher.embedder)
    loading, release = threading.Event(), threading.Event()
    real_open = live_module.open_index

    def slow_open(*args, **kwargs):
        loading.set()
        release.wait(timeout=10)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(live_module, "open_index", slow_open)
    first = threading.Thread(target=client.get, args=("/health",))
    first.start()  # notices the new manifest and loads it, slowly
    assert loading.wait(timeout=10)
    assert client.get("/health").json()["index"]["count"] == IMAGES + 2  # the old one, at once
    release.set()
    first.join()
    assert client.get("/health").json()["index"]["count"] == IMAGES + 3


def test_an_emptied_index_answers_with_no_hits_but_still_the_predictions(copied):
    writer = open_index(copied, mmap=False, device="cpu")
    writer.remove(ids=[row["id"] for row in writer.metadata.to_pylist()])
    writer.save()
    client = _client(load_searcher(copied, "cpu"))
    result = _upload(("a.png", _png(_picture(1))), client=client).json()["results"][0]
    assert result["hits"] == [] and 1 <= result["blur_level"] <= 10


def test_an_unexpected_failure_is_a_json_500_and_the_server_goes_on(searcher, monkeypatch):
    client = _client(searcher, raise_server_exceptions=False)
    monkeypatch.setattr(searcher, "health", lambda: 1 / 0)
    broken = client.get("/health")
    assert broken.status_code == 500 and broken.json() == {"error": "internal error (ZeroDivisionError)"}
    assert _upload(("a.png", _png(_picture(1))), client=client).status_code == 200


def test_serve_prints_where_it_listens_and_runs_uvicorn(tiny, monkeypatch):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: calls.append((app, options)))
    result = CliRunner().invoke(main, ["serve", str(tiny / "idx"), "--port", "8123", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "listening on http://127.0.0.1:8123/" in result.output and f"{IMAGES + 2} images" in result.output
    app, options = calls[0]
    assert options == {"host": "127.0.0.1", "port": 8123, **uvicorn_settings()}
    assert options["http"] is HeadDeadlineProtocol and options["timeout_keep_alive"] == 5
    assert TestClient(app, base_url="http://localhost:8123").get("/health").status_code == 200
    assert TestClient(app).get("/health").status_code == 400, "Host: testserver"


def test_serve_answers_the_hosts_allowed_for_a_proxy(tiny, monkeypatch):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: calls.append((app, options)))
    result = CliRunner().invoke(main, ["serve", str(tiny / "idx"), "--host", "0.0.0.0", "--device", "cpu",
                                       "--allowed-host", "search.example", "--allowed-host", "10.0.0.5:8080"])
    assert result.exit_code == 0, result.output
    client = TestClient(calls[0][0])
    for host, status in [("search.example", 200), ("search.example:443", 200), ("0.0.0.0:8000", 200),
                         ("10.0.0.5:8080", 200), ("10.0.0.5:8000", 400), ("other.example", 400)]:
        assert client.get("/health", headers={"Host": host}).status_code == status, host


@pytest.fixture()
def worker_logging():
    """The package loggers a worker's set-up changes, restored after the test."""
    loggers = [logging.getLogger(name) for name in ("retrieval", "indexer")]
    saved = [(logger.level, list(logger.handlers)) for logger in loggers]
    yield
    for logger, (level, handlers) in zip(loggers, saved):
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
        logger.setLevel(level)


def test_serve_with_workers_hands_each_worker_its_settings(tiny, monkeypatch, capsys, worker_logging):
    calls = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: calls.append((app, options)))
    monkeypatch.setenv(SETTINGS_ENV, "")  # restored after the test: the command sets it
    result = CliRunner().invoke(main, ["-v", "serve", str(tiny / "idx"), "--workers", "2", "--device", "cpu",
                                       "--allowed-host", "search.example"])
    assert result.exit_code == 0, result.output
    app, options = calls[0]
    assert app == "indexer.serve.app:app_from_environment" and options["workers"] == 2
    assert options["factory"] is True and options["http"] is HeadDeadlineProtocol
    assert json.loads(os.environ[SETTINGS_ENV])["log_level"] == logging.DEBUG
    worker = TestClient(app_from_environment(), base_url="http://search.example")
    assert worker.get("/health").json()["index"]["count"] == IMAGES + 2
    assert worker.get("/health", headers={"Host": "attacker.example:8000"}).status_code == 400
    logging.getLogger("indexer.serve.live").debug("worker message")
    assert "DEBUG: worker message" in capsys.readouterr().err, "the worker logs as its parent does"


def test_serve_refuses_an_unusable_index_folder(tmp_path):
    result = CliRunner().invoke(main, ["serve", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 2
    assert "cannot serve" in result.output and "not an index folder" in result.output


def test_serve_without_the_extra_says_how_to_install_it(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` fail
    result = CliRunner().invoke(main, ["serve", str(tiny / "idx")])
    assert result.exit_code == 2
    assert "install the serve extra: pip install -e '.[serve]'" in result.output
