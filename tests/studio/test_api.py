"""Studio API: images and explanations, saving (conflicts, validation, size limit), path
safety and the access token."""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rightfocus.studio import create_app, is_loopback


def _body(mask: np.ndarray, base_version: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "mask": base64.b64encode(mask.astype(np.uint8).tobytes()).decode(),
        "shape": list(mask.shape),
        "dtype": "uint8",
        "base_version": base_version,
        **extra,
    }


@pytest.fixture
def client(session) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(create_app(session, max_body=64 * 1024))


def _train_index(session) -> int:  # type: ignore[no-untyped-def]
    return int(session.train_indices[0])


def test_queue_inspect_and_save_round_trip(client: TestClient, session) -> None:  # type: ignore[no-untyped-def]
    info = client.get("/api/session").json()
    assert info["train_images"] == len(session.train_indices) == 48
    assert {"misclassified", "random", "disagreement"} <= set(info["strategies"])
    q = client.get("/api/queue", params={"strategy": "misclassified", "k": 5}).json()["items"]
    assert len(q) == 5 and all(session._in_train[it["index"]] for it in q)
    scores = [it["score"] for it in q]
    assert scores == sorted(scores, reverse=True)
    pc = client.get("/api/queue", params={"strategy": "random", "per_class": True, "k": 10})
    labels = [it["label"] for it in pc.json()["items"]]
    assert len(set(labels[:5])) == 5  # round-robin over classes
    i = q[0]["index"]
    img = client.get(f"/api/images/{i}").json()
    assert (img["height"], img["width"], img["version"], img["mask"]) == (28, 28, 0, None)
    assert abs(sum(img["probs"]) - 1) < 1e-5 and img["pred"] == int(np.argmax(img["probs"]))
    png = client.get(f"/api/images/{i}/explanation.png", params={"method": "gradcam"})
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert float(png.headers["x-server-ms"]) >= 0
    mask = np.zeros((28, 28), np.uint8)
    mask[2:7, 20:26] = 1
    right = np.zeros((28, 28), np.uint8)
    right[10:20, 10:20] = 1
    r = client.put(f"/api/images/{i}/mask", json=_body(mask, right=_body(right)["mask"]))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["who"] == "tester"
    stored, rec = session.store.load(i)
    assert np.array_equal(stored, mask) and rec.checkpoint_sha256 == session.checkpoint_sha256
    assert np.array_equal(session.store.load_right(i), right)
    again = client.get(f"/api/images/{i}").json()
    assert again["version"] == 1
    assert np.array_equal(np.frombuffer(base64.b64decode(again["mask"]), np.uint8), mask.ravel())
    sug = client.get(f"/api/images/{i}/suggest", params={"quantile": 0.9}).json()
    assert 0 < np.frombuffer(base64.b64decode(sug["mask"]), np.uint8).sum() <= 0.1 * 784 + 1
    sp = client.get(f"/api/images/{i}/superpixels", params={"n": 20}).json()
    labels_sp = np.frombuffer(base64.b64decode(sp["labels"]), "<i4")
    assert labels_sp.shape == (784,) and sp["count"] == labels_sp.max() + 1 > 1
    assert client.get("/openapi.json").json()["paths"]["/api/images/{index}/mask"]["put"]


def test_second_tab_gets_a_conflict(client: TestClient, session) -> None:  # type: ignore[no-untyped-def]
    i = _train_index(session)
    a, b = np.zeros((28, 28), np.uint8), np.ones((28, 28), np.uint8)
    assert client.put(f"/api/images/{i}/mask", json=_body(a)).status_code == 200
    late = client.put(f"/api/images/{i}/mask", json=_body(b))  # painted on version 0 too
    assert late.status_code == 409
    assert "version 1" in late.json()["detail"] and "nothing was saved" in late.json()["detail"]
    assert np.array_equal(session.store.load(i)[0], a)


def test_concurrent_saves_one_wins(client: TestClient, session) -> None:  # type: ignore[no-untyped-def]
    i = int(session.train_indices[1])
    codes: list[int] = []
    start = threading.Barrier(4)

    def put(value: int) -> None:
        start.wait()
        r = client.put(f"/api/images/{i}/mask", json=_body(np.full((28, 28), value % 2)))
        codes.append(r.status_code)

    threads = [threading.Thread(target=put, args=(v,)) for v in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 409, 409, 409]
    assert session.store.version(i) == 1 and len(session.store.history(i)) == 1


@pytest.mark.parametrize(
    ("change", "status", "match"),
    [
        ({"shape": [28, 27]}, 400, "shape must be"),
        ({"dtype": "float32"}, 400, "dtype"),
        ({"mask": "not base64!"}, 400, "base64"),
        ({"mask": base64.b64encode(bytes(100)).decode()}, 400, "100 bytes"),
        ({"mask": base64.b64encode(bytes([2]) * 784).decode()}, 400, "0 or 1"),
        ({"base_version": -1}, 422, ""),
        ({"mask": None}, 422, ""),
    ],
)
def test_malformed_masks_are_refused(
    client: TestClient,
    session,
    change: dict[str, Any],
    status: int,
    match: str,  # type: ignore[no-untyped-def]
) -> None:
    i = _train_index(session)
    body = _body(np.zeros((28, 28), np.uint8)) | change
    r = client.put(f"/api/images/{i}/mask", json=body)
    assert r.status_code == status, r.text
    assert match in str(r.json()["detail"])
    assert session.store.load(i) is None


def test_oversized_request_is_refused(client: TestClient, session) -> None:  # type: ignore[no-untyped-def]
    i = _train_index(session)
    body = _body(np.zeros((28, 28), np.uint8)) | {"who": "x" * 70_000}
    r = client.put(f"/api/images/{i}/mask", json=body)
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks():  # no Content-Length: the streamed body is counted
        for _ in range(20):
            yield b" " * 8192

    r = client.put(
        f"/api/images/{i}/mask", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert session.store.load(i) is None


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../pyproject.toml",
        "/static/..%2F..%2Fpyproject.toml",
        "/static/%2e%2e/app.py",
        "/static/app.py",
        "/api/images/..%2F..%2Fetc%2Fpasswd",
        "/api/images/-1",
        "/api/images/999999",
        "/api/images/1e3",
        "/api/compare/..%2F..%2Fbase/after/0/explanation.png",
        "/api/retrain/..%2Fbase",
    ],
)
def test_paths_come_from_the_server_index(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code in (404, 422), (path, r.status_code)
    assert b"[project]" not in r.content and b"root:" not in r.content


def test_validation_images_are_not_served(client: TestClient, session) -> None:  # type: ignore[no-untyped-def]
    val = sorted(set(range(96)) - set(session.train_indices.tolist()))[0]
    r = client.get(f"/api/images/{val}")
    assert r.status_code == 404 and "training pool" in r.json()["detail"]
    r = client.put(f"/api/images/{val}/mask", json=_body(np.zeros((28, 28), np.uint8)))
    assert r.status_code == 404


def test_token_is_checked_on_every_request(session) -> None:  # type: ignore[no-untyped-def]
    c = TestClient(create_app(session, token="s3cret"))
    for path in ("/", "/api/session", "/static/studio.js", "/openapi.json", "/docs"):
        r = c.get(path)
        assert r.status_code == 401 and "token" in r.json()["detail"], path
    assert c.get("/api/session", headers={"X-Rightfocus-Token": "wrong"}).status_code == 401
    assert c.get("/api/session", headers={"X-Rightfocus-Token": "s3cret"}).status_code == 200
    page = c.get("/?token=s3cret")
    assert page.status_code == 200 and "rightfocus_token" in page.headers["set-cookie"]
    assert c.get("/static/studio.js").status_code == 200  # the cookie set by the page


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_serve_requires_a_token_off_loopback(session, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import uvicorn

    from rightfocus.studio import serve

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    lines: list[str] = []
    serve(session, host="0.0.0.0", port=0, announce=lines.append)
    assert "?token=" in lines[0] and seen["port"] > 0
    token = lines[0].rsplit("?token=", 1)[1]
    c = TestClient(seen["app"])
    assert c.get("/api/session").status_code == 401
    assert c.get(f"/api/session?token={token}").status_code == 200
    serve(session, host="127.0.0.1", port=0, announce=lines.append)
    assert "token" not in lines[-1]


def test_retrain_refuses_bad_requests(client: TestClient, session) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/retrain", json={"guidance": "rrr"})
    assert r.status_code == 400 and "store is empty" in r.json()["detail"]
    client.put(f"/api/images/{_train_index(session)}/mask", json=_body(np.ones((28, 28))))
    r = client.post("/api/retrain", json={"guidance": "bayes_feedback"})
    assert r.status_code == 400 and "Bayesian" in r.json()["detail"]
    r = client.post("/api/retrain", json={"guidance": "nope"})
    assert r.status_code == 400 and "rrr" in r.json()["detail"]
    assert client.get("/api/retrain/unknown").status_code == 404


def test_cli_studio_needs_a_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rightfocus.cli import app

    r = CliRunner().invoke(app, ["studio", str(tmp_path)])
    assert r.exit_code != 0 and "not a run folder" in r.output
    r = CliRunner().invoke(app, ["studio"])
    assert r.exit_code != 0 and "run folder" in r.output


def test_uncertainty_map_needs_a_bayesian_model_and_history_lists_versions(
    client: TestClient,
    session,  # type: ignore[no-untyped-def]
) -> None:
    i = _train_index(session)
    r = client.get(f"/api/images/{i}/uncertainty.png")
    assert r.status_code == 400 and "Bayesian" in r.json()["detail"]
    client.put(f"/api/images/{i}/mask", json=_body(np.zeros((28, 28)), who="a"))
    client.put(f"/api/images/{i}/mask", json=_body(np.ones((28, 28)), base_version=1, who="b"))
    hist = client.get(f"/api/images/{i}/history").json()
    assert [(h["version"], h["who"]) for h in hist] == [(1, "a"), (2, "b")]
    assert "app;dur=" in client.get("/api/session").headers["server-timing"]
