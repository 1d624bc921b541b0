"""A loopback stand-in for the Google Drive v2 API, for tests and nbmake runs.

It speaks the HTTP endpoints that pydrive2 calls through googleapiclient:
files.insert (metadata only, multipart and resumable uploads), files.list
with a `q` filter and paging, files.get (metadata and `alt=media` with Range),
files.update (resumable), files.patch, files.delete, files.trash. Requests
must carry the bearer token the server was started with, like the real API.
Files live in a folder on disk (meta.json + blobs/), so a stand-in started by
one notebook's kernel sees what an earlier notebook uploaded: it plays the
part of a Drive that survives a Colab disconnect.

Only 127.0.0.1 is bound; the server is a daemon thread that stops with the
process (or `server.stop()`).

    >>> s = start_standin("/tmp/ck_drive_doctest")  # doctest: +SKIP
    >>> s.root_url.startswith("http://127.0.0.1:")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import re
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FOLDER_MIME = "application/vnd.google-apps.folder"
_CLAUSE = re.compile(
    r"^\s*(?:'(?P<parent>[^']*)'\s+in\s+parents"
    r"|(?P<field>title|mimeType)\s*(?P<op>=|!=)\s*'(?P<value>(?:[^'\\]|\\.)*)'"
    r"|trashed\s*=\s*(?P<trashed>true|false))\s*$"
)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class DriveStore:
    """The stand-in's files: metadata in meta.json, contents in blobs/<id>."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.blobs = self.folder / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.meta_path = self.folder / "meta.json"
        self.lock = threading.RLock()
        self.files: dict[str, dict[str, Any]] = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {}
        self.uploads: dict[str, dict[str, Any]] = {}  # resumable sessions
        self.requests: list[tuple[str, str]] = []  # (method, path?query) log, for tests

    def save(self) -> None:
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.files, ensure_ascii=False))
        tmp.replace(self.meta_path)

    def create(self, body: dict[str, Any], content: bytes | None) -> dict[str, Any]:
        with self.lock:
            fid = secrets.token_hex(8)
            parents = [{"id": p["id"]} for p in body.get("parents") or [{"id": "root"}]]
            meta = {"kind": "drive#file", "id": fid, "title": body.get("title") or "Untitled",
                    "mimeType": body.get("mimeType") or "application/octet-stream", "parents": parents,
                    "labels": {"trashed": False}, "createdDate": _now(), "modifiedDate": _now()}
            self.files[fid] = meta
            if content is not None:
                self.write_content(fid, content)
            self.save()
            return meta

    def write_content(self, fid: str, content: bytes) -> None:
        (self.blobs / fid).write_bytes(content)
        meta = self.files[fid]
        meta.update(fileSize=str(len(content)), md5Checksum=hashlib.md5(content).hexdigest(), modifiedDate=_now())

    def query(self, q: str) -> list[dict[str, Any]]:
        """files.list's `q`: clauses joined by `and` (parents, title, mimeType, trashed)."""
        tests = []
        for clause in re.split(r"\s+and\s+", q.strip()) if q.strip() else []:
            m = _CLAUSE.match(clause)
            if not m:
                raise ValueError(f"stand-in does not understand the query clause {clause!r}")
            if m["parent"] is not None:
                tests.append(lambda f, p=m["parent"]: any(x["id"] == p for x in f["parents"]))
            elif m["trashed"] is not None:
                tests.append(lambda f, t=m["trashed"] == "true": f["labels"]["trashed"] == t)
            else:
                value = re.sub(r"\\(.)", r"\1", m["value"])
                eq = m["op"] == "="
                tests.append(lambda f, k=m["field"], v=value, eq=eq: (f[k] == v) == eq)
        with self.lock:
            return sorted((f for f in self.files.values() if all(t(f) for t in tests)), key=lambda f: f["createdDate"] + f["id"])

    def delete(self, fid: str) -> None:
        with self.lock:
            children = [f["id"] for f in self.files.values() if any(p["id"] == fid for p in f["parents"])]
            for child in children:
                self.delete(child)
            self.files.pop(fid, None)
            (self.blobs / fid).unlink(missing_ok=True)
            self.save()


class _Handler(BaseHTTPRequestHandler):
    server: "DriveStandin"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: tests read server.store.requests instead
        pass

    # ------------------------------------------------------------ helpers
    def _send(self, status: int, body: bytes | dict | None = None, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
        self.send_response(status)
        if isinstance(body, dict):
            self.send_header("Content-Type", "application/json; charset=UTF-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, reason: str, message: str) -> None:
        self._send(status, {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}})

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _route(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        body = self._body()
        store = self.server.store
        store.requests.append((method, self.path))
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            return self._error(401, "authError", "Invalid Credentials")
        parts = url.path.strip("/").split("/")
        try:
            if parts[:3] == ["upload", "drive", "v2"]:
                return self._upload(method, parts[3:], query, body)
            if parts[:2] == ["drive", "v2"]:
                return self._files(method, parts[2:], query, body)
            if parts[:1] == ["resumable"] and method == "PUT":
                return self._upload_chunk(parts[1], body)
        except ValueError as e:
            return self._error(400, "invalid", str(e))
        return self._error(404, "notFound", f"no such endpoint: {method} {url.path}")

    # ------------------------------------------------------------ files.*
    def _files(self, method: str, parts: list[str], query: dict[str, str], body: bytes) -> None:
        store = self.server.store
        if parts == ["files"] and method == "GET":
            items = store.query(query.get("q", ""))
            size = int(query.get("maxResults") or 100)
            start = int(query.get("pageToken") or 0)
            page = {"kind": "drive#fileList", "items": items[start:start + size]}
            if start + size < len(items):
                page["nextPageToken"] = str(start + size)
            return self._send(200, page)
        if parts == ["files"] and method == "POST":
            return self._send(200, store.create(json.loads(body or b"{}"), None))
        if len(parts) < 2 or parts[0] != "files":
            return self._error(404, "notFound", "unknown files method")
        fid = parts[1]
        meta = store.files.get(fid)
        if meta is None:
            return self._error(404, "notFound", f"File not found: {fid}")
        if len(parts) == 3 and parts[2] == "trash" and method == "POST":
            meta["labels"]["trashed"] = True
            store.save()
            return self._send(200, meta)
        if method == "DELETE":
            store.delete(fid)
            return self._send(204)
        if method == "PATCH":
            meta.update({k: v for k, v in json.loads(body or b"{}").items() if k in ("title", "parents", "mimeType", "labels")})
            store.save()
            return self._send(200, meta)
        if method == "GET" and query.get("alt") == "media":
            return self._download(fid)
        if method == "GET":
            return self._send(200, meta)
        return self._error(405, "badMethod", f"{method} not supported on files/{fid}")

    def _download(self, fid: str) -> None:
        data = (self.server.store.blobs / fid).read_bytes() if (self.server.store.blobs / fid).exists() else b""
        total = len(data)
        rng = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if not rng:
            return self._send(200, data)
        start = int(rng[1])
        end = min(int(rng[2]) if rng[2] else total - 1, total - 1)
        if total == 0 or start >= total:
            return self._send(416, b"", {"Content-Range": f"bytes */{total}"})
        return self._send(206, data[start:end + 1], {"Content-Range": f"bytes {start}-{end}/{total}"})

    # ------------------------------------------------------------ uploads
    def _upload(self, method: str, parts: list[str], query: dict[str, str], body: bytes) -> None:
        store = self.server.store
        kind = query.get("uploadType")
        fid = parts[1] if len(parts) > 1 else None
        if fid is not None and fid not in store.files:
            return self._error(404, "notFound", f"File not found: {fid}")
        if kind == "resumable":
            session = secrets.token_hex(8)
            store.uploads[session] = {"fid": fid, "meta": json.loads(body or b"{}"), "data": bytearray()}
            return self._send(200, b"", {"Location": f"{self.server.root_url}resumable/{session}"})
        if kind == "multipart":
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
            meta_part, media_part = list(msg.iter_parts())[:2]
            meta = json.loads(meta_part.get_content())
            content = media_part.get_payload(decode=True) or b""
            return self._send(200, self._finish(fid, meta, content))
        if kind == "media":
            return self._send(200, self._finish(fid, {}, body))
        raise ValueError(f"uploadType {kind!r} not supported")

    def _finish(self, fid: str | None, meta: dict[str, Any], content: bytes) -> dict[str, Any]:
        store = self.server.store
        with store.lock:
            if fid is None:
                return store.create(meta, content)
            store.files[fid].update({k: v for k, v in meta.items() if k in ("title", "mimeType", "parents")})
            store.write_content(fid, content)
            store.save()
            return store.files[fid]

    def _upload_chunk(self, session: str, body: bytes) -> None:
        up = self.server.store.uploads.get(session)
        if up is None:
            return self._error(404, "notFound", "upload session expired")
        header = self.headers.get("Content-Range")
        if header is None:  # googleapiclient sends an empty file's single chunk without one
            header = f"bytes */{len(up['data']) + len(body)}"
            up["data"] += body
        m = re.match(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)$", header)
        if not m:
            raise ValueError(f"bad Content-Range {header!r}")
        if m[1] is not None:
            if int(m[1]) != len(up["data"]):
                raise ValueError(f"chunk starts at {m[1]}, expected {len(up['data'])}")
            up["data"] += body
        total = None if m[3] == "*" else int(m[3])
        if total is not None and len(up["data"]) >= total:
            del self.server.store.uploads[session]
            return self._send(200, self._finish(up["fid"], up["meta"], bytes(up["data"])))
        headers = {"Range": f"bytes=0-{len(up['data']) - 1}"} if up["data"] else {}
        return self._send(308, b"", headers)

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def do_PATCH(self):
        self._route("PATCH")

    def do_DELETE(self):
        self._route("DELETE")


class DriveStandin(ThreadingHTTPServer):
    """The HTTP server; `root_url` goes into the discovery document, `token` into the credentials."""

    daemon_threads = True

    def __init__(self, folder: str | Path, token: str = "standin-token"):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.store = DriveStore(folder)
        self.token = token
        self.root_url = f"http://127.0.0.1:{self.server_address[1]}/"
        self.thread = threading.Thread(target=self.serve_forever, name="drive-standin", daemon=True)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def start_standin(folder: str | Path, token: str = "standin-token") -> DriveStandin:
    """Start a stand-in on 127.0.0.1 (a free port) keeping its files in `folder`."""
    server = DriveStandin(folder, token)
    server.thread.start()
    return server
