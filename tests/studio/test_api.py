"""edgetl studio's HTTP API against the real app served by uvicorn: the
security rules, every endpoint's bad input, uploads refused one by one, and
the training job (one at a time, cancel, failure)."""

from __future__ import annotations

import http.client
import io
import os
import struct
import time
import zlib

import pytest
from PIL import Image

TOKEN = digit_png = sse_events = write_digits = serve = None  # set from tests/studio/conftest.py below


@pytest.fixture(autouse=True)
def _helpers(tools):
    global TOKEN, digit_png, sse_events, write_digits, serve
    TOKEN, digit_png, sse_events = tools.TOKEN, tools.digit_png, tools.sse_events
    write_digits, serve = tools.write_digits, tools.serve


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (a decompression bomb's
    header) with a tiny valid IDAT: no decoder should get as far as pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def corrupt_png() -> bytes:
    data = bytearray(digit_png(0))
    data[40:60] = b"\xff" * 20  # inside IDAT: its checksum no longer matches
    return bytes(data)


def upload(client, cls, files, **kw):
    return client.post("/api/images", params={"class": cls},
                       files=[("files", (name, data, "application/octet-stream")) for name, data in files], **kw)


# -- security ---------------------------------------------------------------------------------
def test_no_token_is_401_everywhere(studio):
    for path in ("/api/project", "/api/options", "/api/runs", "/api/images?class=a", "/static/studio.js",
                 "/webrt/edgetl.js"):
        r = studio.anonymous.get(path)
        assert r.status_code == 401, path
        assert "edgetl studio" in r.json()["error"]
    r = studio.anonymous.get("/")
    assert r.status_code == 401 and "open the URL printed by edgetl studio" in r.text
    assert studio.anonymous.get("/api/project", headers={"X-Edgetl-Token": "wrong"}).status_code == 401
    assert studio.anonymous.get("/api/project", headers={"Cookie": "edgetl_studio=wrong"}).status_code == 401
    assert studio.anonymous.get("/?token=wrong").status_code == 401


def test_token_url_sets_the_cookie_and_redirects_without_it(studio):
    r = studio.anonymous.get(f"/?token={TOKEN}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert f"edgetl_studio={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = studio.anonymous.get("/")  # the client kept the cookie
    assert page.status_code == 200
    assert f'content="{TOKEN}"' in page.text and "__EDGETL_TOKEN__" not in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'wasm-unsafe-eval'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert studio.anonymous.get("/api/project").status_code == 200  # GET with the cookie alone: fine
    # ...but a state-changing request with the cookie alone is CSRF: refused.
    for method, path in (("POST", "/api/classes"), ("PATCH", "/api/classes/a"), ("DELETE", "/api/classes/a"),
                         ("POST", "/api/train"), ("POST", "/api/train/cancel")):
        r = studio.anonymous.request(method, path, json={"name": "b"})
        assert r.status_code == 403, (method, path)
        assert "X-Edgetl-Token" in r.json()["error"]
    assert not os.path.exists(os.path.join(studio.project_dir, "data", "b"))


def test_wrong_host_is_400(studio):
    for host in ("evil.example", f"evil.example:{studio.port}", "127.0.0.1:1", f"127.0.0.2:{studio.port}"):
        r = studio.client.get("/api/project", headers={"Host": host})
        assert r.status_code == 400, host
        assert "Host" in r.json()["error"]
    assert studio.client.get("/api/project", headers={"Host": f"localhost:{studio.port}"}).status_code == 200
    # Refused before authentication: the token does not help a rebound name.
    assert studio.client.post("/api/classes", json={"name": "x"}, headers={"Host": "evil.example"}).status_code == 400


def test_errors_are_json_one_line(studio):
    for r in (studio.client.get("/api/nothing"), studio.client.put("/api/project"),
              studio.client.post("/api/classes", content=b"not json")):
        assert r.status_code in (400, 404, 405)
        message = r.json()["error"]
        assert message and "\n" not in message


# -- classes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "a\\b", "a\x00b", "a\nb", "x" * 101, 7, None,
                                  "../escape", " padded "])
def test_bad_class_names_are_400(studio, name):
    r = studio.client.post("/api/classes", json={"name": name})
    assert r.status_code == 400, name
    assert r.json()["error"]
    assert os.listdir(os.path.join(studio.project_dir, "data")) == []
    assert not os.path.exists(os.path.join(studio.project_dir, "escape"))


def test_classes_create_rename_delete(studio):
    c = studio.client
    assert c.post("/api/classes", json={"name": "cat"}).status_code == 201
    r = c.post("/api/classes", json={"name": "cat"})
    assert r.status_code == 409 and "exists" in r.json()["error"]
    assert upload(c, "cat", [("a.png", digit_png(0))]).json()["added"] == [{"name": "a.png"}]
    assert c.patch("/api/classes/cat", json={"name": "kitten"}).json() == {"name": "kitten"}
    assert c.patch("/api/classes/nothing", json={"name": "x"}).status_code == 404
    assert c.post("/api/classes", json={"name": "dog"}).status_code == 201
    assert c.patch("/api/classes/dog", json={"name": "kitten"}).status_code == 409
    assert c.patch("/api/classes/dog", json={"name": "../dog"}).status_code == 400
    project = c.get("/api/project").json()
    assert project["classes"] == [{"name": "dog", "count": 0}, {"name": "kitten", "count": 1}]
    assert project["data_version"] == 4  # add, upload, rename, add
    assert c.delete("/api/classes/kitten").json() == {"deleted": 1}
    trash = os.path.join(studio.project_dir, ".studio", "trash")
    (kept,) = os.listdir(trash)
    assert os.listdir(os.path.join(trash, kept)) == ["a.png"]  # nothing lost
    assert c.get("/api/project").json()["classes"] == [{"name": "dog", "count": 0}]
    assert c.delete("/api/classes/kitten").status_code == 404


def test_bound_to_every_interface_any_host_name_needs_the_token(tmp_path, tools):
    """--host 0.0.0.0: a phone on the network names the machine by an address the server cannot
    know, so the Host check steps aside and the token alone guards every request."""
    import asyncio

    import httpx

    from edgetl.studio.server import create_app

    app = create_app(str(tmp_path / "project"), token=tools.TOKEN, host="0.0.0.0", port=8765)

    async def get(headers):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://192.168.1.50:8765") as c:
            return await c.get("/api/project", headers=headers)

    assert asyncio.run(get({"X-Edgetl-Token": tools.TOKEN})).status_code == 200
    assert asyncio.run(get({})).status_code == 401


def test_a_hostile_class_name_is_only_ever_json_text(studio):
    name = "<img src=x onerror=alert(1)>"
    assert studio.client.post("/api/classes", json={"name": name}).json() == {"name": name}
    assert os.path.isdir(os.path.join(studio.project_dir, "data", name))
    r = studio.client.get("/api/project")
    assert r.headers["content-type"] == "application/json"
    assert r.json()["classes"] == [{"name": name, "count": 0}]
    assert studio.client.get("/api/images", params={"class": name}).json()["class"] == name
    page = studio.client.get("/").text
    assert "<img src=x" not in page and "onerror" not in page


# -- uploads ------------------------------------------------------------------------------------
def test_upload_refuses_bad_files_one_by_one_and_keeps_the_rest(studio):
    c = studio.client
    c.post("/api/classes", json={"name": "d"})
    files = [("good.png", digit_png(1)), ("corrupt.png", corrupt_png()), ("text.jpg", b"hello, not a jpeg\n"),
             ("bomb.png", png_header_only(20000, 20000)), ("notes.txt", digit_png(2)),
             ("../../escape.png", digit_png(3)), ("good.png", digit_png(4)), ("empty.png", b""),
             ("wéird name!.PNG", digit_png(5))]
    r = upload(c, "d", files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [a["name"] for a in body["added"]] == ["good.png", "escape.png", "good (2).png", "w_ird name_.png"]
    refused = {x["name"]: x["reason"] for x in body["refused"]}
    assert set(refused) == {"corrupt.png", "text.jpg", "bomb.png", "notes.txt", "empty.png"}
    assert "too large" in refused["bomb.png"]
    assert "not a readable image" in refused["text.jpg"]
    assert "not an image file type" in refused["notes.txt"]
    assert all("\n" not in reason for reason in refused.values())
    assert sorted(os.listdir(os.path.join(studio.project_dir, "data", "d"))) == sorted(
        ["good.png", "escape.png", "good (2).png", "w_ird name_.png"])
    assert not os.path.exists(os.path.join(studio.project_dir, "escape.png"))
    with open(os.path.join(studio.project_dir, "data", "d", "good (2).png"), "rb") as fh:
        assert fh.read() == digit_png(4)
    listing = c.get("/api/images", params={"class": "d"}).json()
    assert listing["total"] == 4 and [i["name"] for i in listing["images"]] == sorted(
        ["good.png", "escape.png", "good (2).png", "w_ird name_.png"])


def test_upload_limits(studio, monkeypatch):
    from edgetl.studio import api_data

    c = studio.client
    c.post("/api/classes", json={"name": "d"})
    assert upload(c, "nothing", [("a.png", digit_png(0))]).status_code == 404
    assert upload(c, "../d", [("a.png", digit_png(0))]).status_code == 400
    r = upload(c, "d", [(f"{i}.png", b"x") for i in range(1001)])  # one more than allowed
    assert r.status_code == 413 and "1000" in r.json()["error"]
    # A Content-Length over 500 MB is refused before any byte of the body is read.
    conn = http.client.HTTPConnection("127.0.0.1", studio.port, timeout=10)
    conn.putrequest("POST", "/api/images?class=d")
    conn.putheader("X-Edgetl-Token", TOKEN)
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(600 * 1024 * 1024))
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and b"500 MB" in resp.read()
    conn.close()
    # One file over the per-file limit is refused on its own (limit lowered for the test).
    monkeypatch.setattr(api_data, "MAX_FILE_BYTES", 200)
    big = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(big, "BMP")
    r = upload(c, "d", [("big.bmp", big.getvalue()), ("small.png", digit_png(0))])
    assert [a["name"] for a in r.json()["added"]] == ["small.png"]
    assert r.json()["refused"][0]["name"] == "big.bmp" and "MB" in r.json()["refused"][0]["reason"]
    assert c.post("/api/images", params={"class": "d"}, files=[("other", ("a.png", b"x"))]).status_code == 400


def test_upload_reports_duplicates_of_another_class(studio):
    c = studio.client
    for cls in ("a", "b"):
        c.post("/api/classes", json={"name": cls})
    upload(c, "a", [("one.png", digit_png(10)), ("two.png", digit_png(11))])
    r = upload(c, "b", [("copy.png", digit_png(10)), ("new.png", digit_png(12))]).json()
    assert [a["name"] for a in r["added"]] == ["copy.png", "new.png"]
    assert r["duplicates"] == [{"name": "copy.png", "same_as": "a/one.png"}]
    # the same bytes again in the same class: not a cross-class duplicate
    assert upload(c, "a", [("again.png", digit_png(11))]).json()["duplicates"] == []
    assert c.get("/api/duplicates").json() == {"groups": [["a/one.png", "b/copy.png"]]}
    listing = {i["name"]: i for i in c.get("/api/images", params={"class": "b"}).json()["images"]}
    assert listing["copy.png"]["duplicate_of"] == ["a/one.png"]
    assert listing["new.png"]["duplicate_of"] == []
    hashes = os.path.join(studio.project_dir, ".studio", "hashes.json")
    assert os.path.isfile(hashes)


# -- reading images, traversal ------------------------------------------------------------------
def test_images_thumbnails_and_paging(digits_studio):
    c = digits_studio.client
    page = c.get("/api/images", params={"class": "1", "offset": 10, "limit": 5}).json()
    assert page["total"] == 30 and page["offset"] == 10
    assert [i["name"] for i in page["images"]] == [f"{n:03d}.png" for n in range(10, 15)]
    assert c.get("/api/images", params={"class": "1", "limit": 201}).status_code == 400
    assert c.get("/api/images", params={"class": "1", "offset": -1}).status_code == 400
    assert c.get("/api/images", params={"class": "1", "limit": "x"}).status_code == 400
    assert c.get("/api/images").status_code == 400
    thumb = c.get("/api/image", params={"class": "1", "name": "003.png"})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (8, 8)  # never enlarged
    assert len(os.listdir(os.path.join(digits_studio.project_dir, ".studio", "thumbs"))) == 1
    assert c.get("/api/image", params={"class": "1", "name": "003.png"}).content == thumb.content
    full = c.get("/api/image", params={"class": "1", "name": "003.png", "size": "full"})
    with open(os.path.join(digits_studio.project_dir, "data", "1", "003.png"), "rb") as fh:
        assert full.content == fh.read()
    assert full.headers["content-type"] == "image/png"
    assert c.get("/api/image", params={"class": "1", "name": "003.png", "size": "huge"}).status_code == 400
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:  # one thumbnail asked for at once by many requests
        got = list(pool.map(lambda _: c.get("/api/image", params={"class": "2", "name": "005.png"}), range(16)))
    assert {r.status_code for r in got} == {200} and len({r.content for r in got}) == 1
    assert c.get("/api/image", params={"class": "1", "name": "nothing.png"}).status_code == 404


def test_traversal_and_symlinks_never_reach_outside(digits_studio, tmp_path):
    c = digits_studio.client
    secret = tmp_path / "secret.png"
    secret.write_bytes(digit_png(7))
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.png").write_bytes(digit_png(8))
    data = os.path.join(digits_studio.project_dir, "data")
    os.symlink(secret, os.path.join(data, "1", "link.png"))
    os.symlink(tmp_path / "outside", os.path.join(data, "1", "linkdir"))
    os.symlink(tmp_path / "outside", os.path.join(data, "linked-class"))
    names = ["../../../secret.png", "../2/000.png", "/etc/passwd", str(secret), "link.png", "linkdir/x.png",
             "..\\..\\secret.png", "000.png\x00.txt", "./000.png", "a//b.png", ".hidden.png"]
    for name in names:
        for size in ("thumb", "full"):
            r = c.get("/api/image", params={"class": "1", "name": name, "size": size})
            assert r.status_code in (400, 404), (name, size)
            assert r.content != secret.read_bytes() and r.headers["content-type"] == "application/json"
    for cls in ("..", "../..", "/etc", "linked-class", "1/../2", ".", "%2e%2e"):
        assert c.get("/api/images", params={"class": cls}).status_code in (400, 404), cls
        assert c.get("/api/image", params={"class": cls, "name": "x.png"}).status_code in (400, 404), cls
    listing = [i["name"] for i in c.get("/api/images", params={"class": "1", "limit": 200}).json()["images"]]
    assert "link.png" not in listing and not any(n.startswith("linkdir") for n in listing)
    assert "linked-class" not in [x["name"] for x in c.get("/api/project").json()["classes"]]
    # encoded separators and '..' in the URL path itself
    for path in ("/api/runs/..%2f..%2fetc/file?name=metrics.json", "/api/runs/run-001%2f..%2f/file?name=x",
                 "/api/classes/..%5c..", "/api/runs/%2e%2e/bundle.zip", "/static/..%2fserver.py",
                 "/webrt/..%2f..%2fstudio%2fserver.py", "/api/runs/run%00/file?name=metrics.json"):
        r = c.get(path)
        assert r.status_code in (400, 404), path
        assert b"import" not in r.content
    r = c.request("DELETE", "/api/classes/..%2f1")
    assert r.status_code in (400, 404) and os.path.isdir(os.path.join(data, "1"))
    for body in ({"class": "1", "name": "../2/000.png", "to": "0"}, {"class": "1", "name": "link.png", "to": "0"},
                 {"class": "1", "name": "000.png", "to": "../escape"}, {"class": "1", "name": "000.png", "to": "/tmp"}):
        assert c.post("/api/images/move", json=body).status_code in (400, 404), body
    assert secret.exists() and (tmp_path / "outside" / "x.png").exists()
    assert not os.path.exists(os.path.join(digits_studio.project_dir, "escape"))


def test_static_and_webrt_files(studio):
    c = studio.client
    r = c.get("/webrt/edgetl.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert "ort.wasm.min.mjs" in r.text
    assert c.get("/webrt/sw.js").status_code == 404
    assert c.get("/webrt/ort/evil.mjs").status_code == 404
    assert c.get("/static/index.html").status_code == 404
    assert c.get("/static/server.py").status_code == 404


def test_move_between_classes_bumps_the_data_version(digits_studio):
    c = digits_studio.client
    before = c.get("/api/project").json()
    r = c.post("/api/images/move", json={"class": "1", "name": "004.png", "to": "2"})
    assert r.json() == {"class": "2", "name": "004 (2).png"}  # 2/004.png exists: the clash rule
    data = os.path.join(digits_studio.project_dir, "data")
    assert not os.path.exists(os.path.join(data, "1", "004.png"))
    with open(os.path.join(data, "2", "004 (2).png"), "rb") as fh, \
            open(os.path.join(data, "2", "004.png"), "rb") as other:
        assert fh.read() != other.read()
    after = c.get("/api/project").json()
    assert after["data_version"] == before["data_version"] + 1
    assert {x["name"]: x["count"] for x in after["classes"]} == {"0": 30, "1": 29, "2": 31}
    assert c.post("/api/images/move", json={"class": "2", "name": "004 (2).png", "to": "0"}).json() == {
        "class": "0", "name": "004 (2).png"}
    assert c.post("/api/images/move", json={"class": "0", "name": "004 (2).png", "to": "0"}).status_code == 409
    assert c.post("/api/images/move", json={"class": "1", "name": "nope.png", "to": "2"}).status_code == 404
    assert c.post("/api/images/move", json={"class": "1", "name": "005.png", "to": "nope"}).status_code == 404
    assert c.get("/api/project").json()["data_version"] == before["data_version"] + 2


def test_a_from_folder_is_never_written(tmp_path):
    source = write_digits(tmp_path / "source", classes=("0", "1"), per_class=5)
    os.makedirs(os.path.join(source, "1", "sub"))
    with open(os.path.join(source, "1", "sub", "deep.png"), "wb") as fh:
        fh.write(digit_png(0))  # the same bytes as 0/000.png: a duplicate

    def snapshot():
        out = {}
        for root, dirs, files in os.walk(source):
            for n in dirs + files:
                st = os.lstat(os.path.join(root, n))
                out[os.path.join(root, n)] = (st.st_size, st.st_mtime_ns)
        out[source] = os.lstat(source).st_mtime_ns
        return out

    before = snapshot()
    with serve(tmp_path / "project", source=source) as s:
        c = s.client
        project = c.get("/api/project").json()
        assert project["read_only"] and project["source"] == os.path.realpath(source)
        assert {x["name"]: x["count"] for x in project["classes"]} == {"0": 5, "1": 6}
        names = [i["name"] for i in c.get("/api/images", params={"class": "1"}).json()["images"]]
        assert "sub/deep.png" in names
        assert c.get("/api/image", params={"class": "1", "name": "sub/deep.png"}).status_code == 200
        full = c.get("/api/image", params={"class": "1", "name": "sub/deep.png", "size": "full"})
        assert full.content == digit_png(0)
        assert c.get("/api/duplicates").json()["groups"] == [["0/000.png", "1/sub/deep.png"]]
        for r in (c.post("/api/classes", json={"name": "new"}), c.patch("/api/classes/0", json={"name": "zero"}),
                  c.delete("/api/classes/0"), upload(c, "0", [("a.png", digit_png(3))]),
                  c.post("/api/images/move", json={"class": "0", "name": "000.png", "to": "1"})):
            assert r.status_code == 403
            assert "--from" in r.json()["error"] and "\n" not in r.json()["error"]
    assert snapshot() == before
    assert not os.path.exists(os.path.join(tmp_path, "project", "data"))


def test_project_inside_its_from_folder_is_refused(tmp_path):
    from edgetl.errors import DataError
    from edgetl.studio.server import create_app

    source = write_digits(tmp_path / "source", classes=("0", "1"), per_class=2)
    with pytest.raises(DataError, match="never writes into"):
        create_app(os.path.join(source, "project"), source=source)
    assert sorted(os.listdir(source)) == ["0", "1"]


def test_a_class_of_50000_images_lists_fast(studio):
    folder = os.path.join(studio.project_dir, "data", "many")
    os.makedirs(folder)
    for i in range(50_000):
        os.close(os.open(os.path.join(folder, f"{i:06d}.png"), os.O_CREAT | os.O_WRONLY, 0o644))
    c = studio.client
    c.get("/api/images", params={"class": "many", "limit": 1})  # the first listing scans the folder
    t = time.perf_counter()
    page = c.get("/api/images", params={"class": "many", "offset": 49_990, "limit": 200}).json()
    project = c.get("/api/project").json()
    assert time.perf_counter() - t < 1.0
    assert page["total"] == 50_000 and [i["name"] for i in page["images"]][0] == "049990.png"
    assert project["total"] == 50_000
    os.close(os.open(os.path.join(folder, "050000.png"), os.O_CREAT | os.O_WRONLY, 0o644))  # mtime changes
    assert c.get("/api/images", params={"class": "many", "limit": 1}).json()["total"] == 50_001


# -- options, settings, training ----------------------------------------------------------------
def test_options_and_bad_settings(digits_studio):
    c = digits_studio.client
    options = c.get("/api/options").json()
    assert set(options["budgets"]) == {"phone", "watch", "none"} and "efficientnet_lite0" in options["backbones"]
    assert options["strategies"] == ["head", "bias", "last-2", "full", "auto"]
    for settings in ({"budget": "moon"}, {"backbone": "nonet"}, {"strategy": "everything"},
                     {"max_latency_ms": -1}, {"image_size": 4}, {"out": "/tmp/x"}, {"data_dir": "/"},
                     {"weights": "/etc/passwd"}, {"no_such_setting": 1}):
        r = c.post("/api/train", json=settings)
        assert r.status_code == 400, settings
        assert "\n" not in r.json()["error"]
    assert c.post("/api/train", content=b"[1, 2]").status_code == 400
    assert c.get("/api/runs").json() == []
    assert c.post("/api/train/cancel").status_code == 409
    assert c.get("/api/train/events").status_code == 404
    for run in ("run-001", "../run-001", "run-1", "x"):
        for tail in ("", "/cell?true=0&pred=0", "/worst", "/file?name=metrics.json", "/bundle.zip"):
            assert c.get(f"/api/runs/{run}{tail}").status_code in (400, 404), run + tail


def test_training_twice_is_409_and_cancel_stops_it(digits_studio):
    c = digits_studio.client
    r = c.post("/api/train", json={"budget": "none", "image_size": 32})
    assert r.status_code == 202 and r.json() == {"run": "run-001"}
    second = c.post("/api/train", json={"budget": "none"})
    assert second.status_code == 409
    assert second.json() == {"error": "a training is already running (run-001): wait for it or cancel it"}
    assert c.get("/api/project").json()["training"]["run"] == "run-001"
    assert c.post("/api/train/cancel").json() == {"cancelled": "run-001"}
    events = sse_events(c)
    assert events[-1][1] == {"event": "cancelled"}
    assert [i for i, _ in events] == list(range(len(events)))
    (run,) = c.get("/api/runs").json()
    assert run["status"] == "cancelled" and run["id"] == "run-001"
    assert c.get("/api/project").json()["training"] is None
    assert not os.path.exists(os.path.join(digits_studio.project_dir, "runs", "run-001"))
    assert c.get("/api/runs/run-001").status_code == 404
    assert c.post("/api/train/cancel").status_code == 409


def test_a_failing_run_leaves_the_server_answering(tmp_path):
    write_digits(tmp_path / "project" / "data", classes=("0",), per_class=5)
    with serve(tmp_path / "project") as s:
        c = s.client
        assert c.post("/api/train", json={"image_size": 32}).status_code == 202
        events = sse_events(c)
        final = events[-1][1]
        assert final["event"] == "error" and "at least 2" in final["message"] and "\n" not in final["message"]
        (run,) = c.get("/api/runs").json()
        assert run["status"] == "failed" and run["error"] == final["message"]
        assert c.get("/api/project").status_code == 200
        # the stream replays: from an id on, and by Last-Event-ID
        assert sse_events(c, after=events[-2][0]) == events[-1:]
        assert sse_events(c, headers={"Last-Event-ID": str(events[-2][0])}) == events[-1:]
        assert c.post("/api/train", json={"image_size": 32}).json() == {"run": "run-002"}  # a new one may start
        sse_events(c)


# -- a real training, end to end ----------------------------------------------------------------
def _cell_expected(metrics: dict, data: str, true: str, pred: str) -> list[dict]:
    out = []
    for p in metrics["val_predictions"]:
        if p["label"] == true and p["predicted"] == pred:
            cls, name = os.path.relpath(p["path"], data).split(os.sep, 1)
            out.append({"class": cls, "name": name.replace(os.sep, "/"), "label": p["label"],
                        "predicted": p["predicted"], "probability": p["probability"]})
    return out


@pytest.mark.slow  # a whole training (test_e2e trains through the page in the default suite)
def test_a_real_training_end_to_end(digits_studio, tmp_path):
    import json
    import zipfile

    from edgetl.runtime import Predictor

    c = digits_studio.client
    r = c.post("/api/train", json={"budget": "none", "backbone": "efficientnet_lite0", "image_size": 32})
    assert r.status_code == 202
    run = r.json()["run"]
    events = sse_events(c)
    kinds = [e["event"] for _, e in events]
    assert kinds[0] == "start" and kinds[-1] == "done", events[-3:]
    assert {"extract", "candidate"} <= set(kinds)
    run_dir = os.path.join(digits_studio.project_dir, "runs", run)
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
        metrics = json.load(fh)
    detail = c.get(f"/api/runs/{run}").json()
    assert detail["status"] == "done" and detail["stale"] is False and detail["error"] is None
    assert detail["val_accuracy"] == metrics["val_accuracy"] == detail["metrics"]["val_accuracy"]
    assert events[-1][1]["val_accuracy"] == metrics["val_accuracy"]
    assert "val_predictions" not in detail["metrics"] and detail["metrics"]["labels"] == ["0", "1", "2"]
    assert detail["settings"] == {"backbone": "efficientnet_lite0", "image_size": 32}

    data = os.path.join(digits_studio.project_dir, "data")
    total = 0
    for true in ("0", "1", "2"):
        for pred in ("0", "1", "2"):
            got = c.get(f"/api/runs/{run}/cell", params={"true": true, "pred": pred}).json()["images"]
            assert got == _cell_expected(metrics, data, true, pred)
            total += len(got)
            for image in got[:1]:  # each names a real image of the project
                assert c.get("/api/image", params={"class": image["class"], "name": image["name"]}).status_code == 200
    assert total == len(metrics["val_predictions"]) > 0
    worst = c.get(f"/api/runs/{run}/worst", params={"limit": 5}).json()["images"]
    wrong = sum(p["label"] != p["predicted"] for p in metrics["val_predictions"])
    assert len(worst) == min(5, total)
    assert all(w["label"] != w["predicted"] for w in worst[:wrong])
    right = [w["probability"] for w in worst[wrong:]]
    assert right == sorted(right)

    report = c.get(f"/api/runs/{run}/file", params={"name": "report.html"})
    assert report.status_code == 200 and "content-security-policy" in report.headers
    assert c.get(f"/api/runs/{run}/file", params={"name": "metrics.json"}).json() == metrics
    for bad in ("config.toml", "../metrics.json", "plots/../metrics.json", "/etc/passwd", "plots/.x.png"):
        assert c.get(f"/api/runs/{run}/file", params={"name": bad}).status_code == 400, bad

    zipped = c.get(f"/api/runs/{run}/bundle.zip")
    assert zipped.status_code == 200 and zipped.headers["content-type"] == "application/zip"
    out = tmp_path / "bundle"
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        names = set(zf.namelist())
        zf.extractall(out)
    assert {"model.onnx", "model.int8.onnx", "labels.txt", "features.onnx", "train_step.onnx", "head.safetensors",
            "metrics.json", "config.toml"} <= names
    image = os.path.join(data, "2", "000.png")
    (prediction,) = Predictor(str(out)).predict([image])
    assert prediction.label in ("0", "1", "2") and 0 <= prediction.probability <= 1

    info = c.get(f"/preview/{run}/int8/bundle/bundle.json").json()
    assert info["features"] == "bundle/features.int8.onnx" and info["labels"] == ["0", "1", "2"]
    with open(os.path.join(run_dir, "features.int8.onnx"), "rb") as fh:
        assert c.get(f"/preview/{run}/int8/bundle/features.int8.onnx").content == fh.read()
    assert c.get(f"/preview/{run}/fp32/bundle/bundle.json").json()["precision"] == "fp32"
    assert c.get(f"/preview/{run}/int4/bundle/bundle.json").status_code == 404
    assert c.get(f"/preview/{run}/int8/bundle/model.onnx").status_code == 404
    assert c.get(f"/api/runs/{run}/export/web.zip").status_code == 404  # not exported yet

    c.post("/api/images/move", json={"class": "2", "name": "000.png", "to": "1"})
    assert c.get(f"/api/runs/{run}").json()["stale"] is True
    assert c.get("/api/project").json()["runs"][0]["stale"] is True


def test_the_server_never_imports_torch(tmp_path):
    import subprocess
    import sys

    script = f"""
import asyncio, sys
import edgetl.studio.worker
assert "fastapi" not in sys.modules, "importing the worker imported fastapi"
import httpx
from edgetl.studio import create_app
app = create_app({str(tmp_path / 'p')!r}, token="t", port=8000)
async def main():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000",
                                 headers={{"X-Edgetl-Token": "t"}}) as c:
        assert (await c.post("/api/classes", json={{"name": "a"}})).status_code == 201
        for path in ("/", "/api/project", "/api/options", "/api/runs", "/api/images?class=a", "/api/duplicates",
                     "/webrt/edgetl.js"):
            assert (await c.get(path)).status_code == 200, path
        assert (await c.post("/api/train", json={{"backbone": "nonet"}})).status_code == 400
asyncio.run(main())
heavy = sorted(m for m in ("torch", "torchvision", "sklearn", "matplotlib") if m in sys.modules)
print("heavy:", heavy)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "heavy: []" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["tflite", "web"])
def test_export_through_the_worker(digits_studio, fmt, tmp_path):
    """A real export (minutes for TFLite; the web one needs npm once): the zip
    holds what the export record names."""
    import zipfile

    c = digits_studio.client
    run = c.post("/api/train", json={"image_size": 32}).json()["run"]
    assert sse_events(c)[-1][1]["event"] == "done"
    assert c.post(f"/api/runs/{run}/export/pdf").status_code == 404
    r = c.post(f"/api/runs/{run}/export/{fmt}")
    if r.status_code == 409:
        pytest.skip(r.json()["error"])
    assert r.status_code == 200, r.text
    assert r.json() == {"download": f"/api/runs/{run}/export/{fmt}.zip"}
    zipped = c.get(r.json()["download"])
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        names = zf.namelist()
    expected = {"tflite": "model.tflite", "web": "web/bundle/bundle.json"}[fmt]
    assert expected in names, names


def test_plan_bad_input_is_400_before_any_worker(digits_studio):
    c = digits_studio.client
    for body in ({"strategies": "head"}, {"strategies": [1]}, {"backbone": "nonet"}, {"image_size": 2},
                 {"max_memory_mb": -5}):
        r = c.post("/api/plan", json=body)
        assert r.status_code == 400, body
        assert "\n" not in r.json()["error"]


@pytest.mark.slow
def test_plan_through_the_worker(digits_studio):
    r = digits_studio.client.post("/api/plan", json={"backbone": "efficientnet_lite0", "image_size": 32,
                                                     "strategies": ["head", "bias"]})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["image_size"] == 32 and plan["idle_mb"] > 0
    assert [p["strategy"] for p in plan["plans"]] == ["head", "bias"]
    assert all({"estimated_mb", "fits", "trainable_params"} <= set(p) for p in plan["plans"])
