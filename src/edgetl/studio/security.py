"""The studio's guard on every request (docs/studio-api.md, "Security"):
the Host check (DNS rebinding), the token (cookie or header), the CSRF rule
(state-changing methods need the header), encoded separators in the path,
the request-size limit and the response headers; plus the checks of every
name that reaches the disk (class names, image names, upload file names).

A plain ASGI middleware (not ``BaseHTTPMiddleware``): it wraps ``receive``
to count the body, and it never buffers a streamed answer (SSE)."""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import unicodedata
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from ..data.image import IMAGE_EXTENSIONS

COOKIE = "edgetl_studio"
HEADER = "x-edgetl-token"
MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_FILES = 1000
MAX_REQUEST_BYTES = 500 * 1024 * 1024
PAGE = 200
STATE_CHANGING = {"POST", "PATCH", "PUT", "DELETE"}
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; script-src 'self' "
       "'wasm-unsafe-eval'; style-src 'self'; connect-src 'self'; frame-ancestors 'none'")
COMMON_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
WILDCARD_HOSTS = ("0.0.0.0", "::")
_ENCODED_BAD = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


class BodyTooLarge(Exception):
    """The request body passed MAX_REQUEST_BYTES while it was read."""


class BadName(ValueError):
    """A name from a request that must not reach the disk (400 with this message)."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def allowed_hosts(host: str, port: int) -> set[str]:
    """Host header values this server answers (with the port; without it only for port 80)."""
    names = {host, "127.0.0.1", "localhost"}
    out = set()
    for name in names:
        shown = f"[{name}]" if ":" in name else name
        out.add(f"{shown}:{port}".lower())
        if port == 80:
            out.add(shown.lower())
    return out


def _json_response(status: int, message: str, headers=()):
    body = json.dumps({"error": message}).encode()
    return status, [(b"content-type", b"application/json"), *headers], body


def _cookie_token(scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:
                continue
            if COOKIE in jar:
                return jar[COOKIE].value
    return None


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _same(a: str | None, b: str) -> bool:
    return a is not None and secrets.compare_digest(a.encode(), b.encode())


class Guard:
    """ASGI middleware: see the module docstring. ``app.state.studio``
    carries token, host and port (the port may be set after binding)."""

    def __init__(self, app, settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            return await _send_plain(send, *refusal)
        receive = _limited(receive, scope)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + COMMON_HEADERS
                if any(k == b"content-type" and v.startswith(b"text/html") for k, v in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope):
        s = self.settings
        host = (_header(scope, b"host") or "").lower()
        # Bound to every interface (--host 0.0.0.0, the user's choice, warned): phones and laptops on the
        # network name it by an address the server cannot know, so only the token guards it.
        if s.host not in WILDCARD_HOSTS and host not in allowed_hosts(s.host, s.port):
            return _json_response(400, f"the Host header {host!r} is not this studio's address: open "
                                       f"http://127.0.0.1:{s.port}/ (DNS rebinding protection)")
        raw = scope.get("raw_path") or scope["path"].encode()
        raw_text = raw.decode("latin-1")
        if _ENCODED_BAD.search(raw_text) or "\x00" in scope["path"] or ".." in scope["path"].split("/"):
            return _json_response(400, "the path holds an encoded separator, NUL or '..': name files by query "
                                       "parameters")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if scope["method"] == "GET" and scope["path"] == "/" and "token" in query:
            return self._token_redirect(query)
        header, cookie = _header(scope, HEADER.encode()), _cookie_token(scope)
        if _same(header, s.token):
            return None
        if _same(cookie, s.token):
            if scope["method"] in STATE_CHANGING:
                return _json_response(403, f"a {scope['method']} needs the X-Edgetl-Token header (the cookie "
                                           f"alone is refused: cross-site request forgery protection)")
            return None
        if scope["path"] == "/":
            return 401, [(b"content-type", b"text/plain; charset=utf-8")], \
                b"open the URL printed by edgetl studio (it carries the token)\n"
        return _json_response(401, "not authenticated: open the URL printed by edgetl studio, or send the "
                                   "X-Edgetl-Token header")

    def _token_redirect(self, query: dict):
        token = query.pop("token")
        if not _same(token, self.settings.token):
            return _json_response(401, "wrong token: open the URL printed by edgetl studio")
        location = "/" + (("?" + urlencode(query)) if query else "")
        cookie = f"{COOKIE}={self.settings.token}; HttpOnly; SameSite=Strict; Path=/"
        return 303, [(b"location", location.encode()), (b"set-cookie", cookie.encode()),
                     (b"content-type", b"text/plain")], b"authenticated\n"


async def _send_plain(send, status: int, headers, body: bytes):
    headers = list(headers) + COMMON_HEADERS + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _limited(receive, scope):
    """``receive`` that raises BodyTooLarge once the body passes the limit
    (whatever Content-Length said; the upload route checks that up front)."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_REQUEST_BYTES:
                raise BodyTooLarge()
        return message

    return wrapped


def page_html(template: str, token: str) -> str:
    return template.replace("__EDGETL_TOKEN__", html.escape(token, quote=True))


# -- names -------------------------------------------------------------------------------------
def check_class_name(name) -> str:
    """The class-name rule of the doc; returns the name or raises BadName."""
    if not isinstance(name, str) or not name:
        raise BadName("a class name is needed (1 to 100 characters)")
    if len(name) > 100:
        raise BadName(f"the class name is {len(name)} characters long; use at most 100")
    if name in (".", "..") or name.startswith("."):
        raise BadName("a class name must not start with '.'")
    if "/" in name or "\\" in name:
        raise BadName("a class name must not contain '/' or '\\'")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs") for c in name):
        raise BadName("a class name must not contain NUL or control characters")
    if name != name.strip():
        raise BadName("a class name must not start or end with spaces")
    return name


def check_image_name(name) -> list[str]:
    """An image's name inside its class folder ('/'-separated) as path parts."""
    if not isinstance(name, str) or not name:
        raise BadName("an image name is needed")
    if "\x00" in name or "\\" in name or name.startswith("/") or os.path.isabs(name):
        raise BadName("an image name must be relative, with '/' separators, without NUL or '\\'")
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise BadName("an image name must not contain '..', '.', empty or hidden parts")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise BadName("an image name must not contain control characters")
    return parts


_UPLOAD_KEEP = re.compile(r"[^A-Za-z0-9\-_. ()]")


def upload_name(filename: str | None) -> str:
    """The doc's rule: base name, other characters -> '_', an image extension."""
    base = re.split(r"[/\\]", filename or "")[-1]
    base = _UPLOAD_KEEP.sub("_", base).strip(" ")
    stem, ext = os.path.splitext(base)
    if ext.lower() not in IMAGE_EXTENSIONS:
        raise BadName(f"not an image file type (use {', '.join(IMAGE_EXTENSIONS)})")
    stem = stem.lstrip(".") or "image"
    return (stem[:150] + ext.lower())


def inside(path: str, root: str) -> bool:
    """Whether ``path`` (already resolved) lies strictly inside resolved ``root``."""
    return path != root and path.startswith(root.rstrip(os.sep) + os.sep)


def resolve_inside(root: str, parts: list[str]) -> str:
    """root/parts, refusing any symlink on the way and anything outside root."""
    real_root = os.path.realpath(root)
    path = os.path.join(real_root, *parts)
    if os.path.realpath(path) != path or not inside(path, real_root):
        raise BadName("that path is a symbolic link or leads outside its folder")
    return path
