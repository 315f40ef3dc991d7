"""A small Hugging Face Hub-compatible HTTP server for tests (standard library only).

Why: publishing and streaming code talks to the Hub through ``huggingface_hub`` and
``datasets``; tests need the real client code paths (preupload, LFS batch + PUT, NDJSON
commit, tree listing, resolve with ranges) without a network. The server keeps a tiny
git-like model on disk under ``storage``:

* ``blobs/<sha256[:2]>/<sha256>``: every file content, addressed by its sha256;
* ``repos/<type>s/<namespace>/<name>.json``: one JSON per repo, ``branches`` maps a branch
  name to its list of commits (oldest first); each commit holds the full file map
  ``path -> {size, sha256, oid (git blob sha1 of the content), lfs}``.

Like the Hub, a new repo starts with one commit holding a ``.gitattributes`` (so ``sha``
is never empty); that commit is not listed in ``HubServer.commits``, which records the
commits landed through the commit endpoint only.

Pointing the client at the server (huggingface_hub 2.4.0)
--------------------------------------------------------
``huggingface_hub.constants.ENDPOINT`` (and ``HUGGINGFACE_CO_URL_TEMPLATE``) are read from
``HF_ENDPOINT`` once, at import, so setting the environment variable in a running process
changes nothing. Either pass the endpoint explicitly everywhere::

    HfApi(endpoint=server.endpoint, token=server.token)
    snapshot_download(repo_id, repo_type="dataset", endpoint=server.endpoint, token=..., ...)
    HfFileSystem(endpoint=server.endpoint, token=server.token)

or call ``patch_endpoint(monkeypatch, server.endpoint)`` which patches, for this test:

* ``constants.ENDPOINT``, ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (``hf_hub_url`` builds
  from the template, not from ``ENDPOINT``), ``constants.HF_URL_HOSTS`` and the redirect
  whitelist ``utils._http._HUB_ORIGINS``: default ``HfApi()``, ``hf_hub_download``,
  ``snapshot_download`` and ``HfFileSystem()`` (also ``fsspec`` ``hf://`` URLs) then use
  the server;
* ``constants.HF_HUB_DISABLE_XET = True``: with ``hf_xet`` installed the client would
  otherwise upload through Xet (``upload_folder`` even switches to a pipelined Xet
  uploader) and ask for ``/xet-write-token``; disabled, uploads use preupload + LFS
  batch + PUT and downloads plain HTTP (the server never sends ``X-Xet-Hash``);
* ``constants.HF_HUB_DISABLE_TELEMETRY = True``: otherwise the first header build fetches
  ``{ENDPOINT}/api/agent-harnesses`` to detect coding agents;
* ``constants.HF_HUB_OFFLINE = False`` (the server is local even when CI is offline);
* tokens: ``HF_TOKEN`` / ``HUGGING_FACE_HUB_TOKEN`` are removed and the token file is
  pointed at a missing path, so a developer's real token is never sent (the server
  would answer 401 to it). Pass ``token=server.token`` or set ``HF_TOKEN`` afterwards;
* ``datasets.config``: ``HF_ENDPOINT``, ``HUB_DATASETS_URL``, ``HF_HUB_OFFLINE``,
  ``USE_PARQUET_EXPORT = False`` (it would query ``datasets-server.<host>``) and
  ``HF_UPDATE_DOWNLOAD_COUNTS = False`` (a HEAD to S3). ``load_dataset("ORG/NAME",
  token=..., cache_dir=...)`` and ``load_dataset("parquet", data_files="hf://datasets/...")``
  then read from the server;
* the environment (``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET``, ...) for child processes.

The ``HfFileSystem`` instance cache is cleared; within a test, call
``fs.invalidate_cache()`` after a commit since listings are cached per instance.

Deliberate limits: dataset and model repos (no spaces, tags, pull requests, Xet,
multipart LFS); a repo is readable without a token only if public; an invalid token is
refused with 401 on every request, as on the Hub. Anything not implemented answers 404
with a JSON message naming the method and path.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypedDict
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import pytest

USERNAME = "test-user"
"""The account every valid token belongs to; repos created without an organization land here."""

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
"""The Hub stores files of 10 MB and more in LFS whatever their name."""

LFS_SUFFIXES = (
    *(".parquet", ".arrow", ".npy", ".npz", ".h5"),  # tables and arrays
    *(".png", ".jpg", ".jpeg", ".nii"),  # images and volumes
    *(".gz", ".zip", ".tar", ".zst"),  # archives, so .nii.gz too
    *(".bin", ".pt", ".safetensors"),  # weights
)
"""Names the initial ``.gitattributes`` routes to LFS, so preupload answers "lfs" for them."""

REPO_TYPES = {"datasets": "dataset", "models": "model"}
"""URL plural -> repo type served. Adding "spaces" would only need an entry here and below."""

URL_PREFIXES = {"dataset": "datasets/", "model": ""}
"""Repo type -> prefix of its web paths (resolve, LFS), as ``constants.REPO_TYPES_URL_PREFIXES``."""

DEFAULT_BRANCH = "main"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT_PREFIX = re.compile(r"[0-9a-f]{7,40}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CHUNK = 1024 * 1024


class FileEntry(TypedDict):
    """One file of a commit: enough to answer tree, paths-info and resolve without the blob."""

    size: int
    sha256: str
    oid: str
    lfs: bool


class CommitRecord(TypedDict):
    """One commit with its full file map, so any revision is served without replaying history."""

    oid: str
    parent: str | None
    summary: str
    description: str
    date: str
    files: dict[str, FileEntry]


class RepoRecord(TypedDict):
    """Everything stored about one repo (the JSON file)."""

    type: str
    id: str
    private: bool
    createdAt: str
    branches: dict[str, list[CommitRecord]]


class RepoKey(NamedTuple):
    """A repo as the URL names it."""

    type: str
    id: str


class HubError(Exception):
    """An HTTP error answer; ``code`` goes to ``X-Error-Code``, which the client maps to its
    exception classes (RepoNotFound, RevisionNotFound, EntryNotFound). ``fields`` are
    added to the JSON body, for clients that read more than the message."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.fields = fields or {}

    def response(self) -> _Response:
        # Header values must be one latin-1 line; the body keeps the message as is.
        safe = " ".join(self.message.split()).encode("ascii", "backslashreplace").decode()
        headers = {"X-Error-Message": safe, **self.headers}
        if self.code is not None:
            headers["X-Error-Code"] = self.code
        return _json(self.status, {"error": self.message, **self.fields}, headers)


@dataclass
class _Request:
    """The parts of an HTTP request the handlers need; ``segments`` stay percent-encoded
    because the client quotes revisions and tree paths with ``safe=""`` (``%2F``)."""

    method: str
    path: str
    segments: list[str]
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as error:
            raise HubError(400, f"invalid JSON body: {error}") from error

    def bearer(self) -> str | None:
        value = self.headers.get("Authorization")
        if value is None:
            return None
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else value.strip()


@dataclass
class _Response:
    """An answer; ``length`` is the Content-Length of a HEAD answer, whose body is left out."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    body = json.dumps(payload).encode()
    return _Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def _now() -> str:
    """The Hub's date format, which ``huggingface_hub.utils.parse_datetime`` expects."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in {"1", "true", "yes", "on"}


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as ``oid`` of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The pointer git stores instead of an LFS file; its size is ``pointerSize``."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def _file_entry(data: bytes) -> FileEntry:
    """The entry of a regular (non-LFS) file."""
    return {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "oid": git_blob_oid(data),
        "lfs": False,
    }


def _pointer_size(entry: FileEntry) -> int:
    return len(lfs_pointer(entry["sha256"], entry["size"]))


def _is_lfs(path: str, size: int, sample: bytes) -> bool:
    """The Hub's rule: tracked by ``.gitattributes``, 10 MB or more, or binary (a NUL byte)."""
    return path.lower().endswith(LFS_SUFFIXES) or size >= LFS_SIZE_THRESHOLD or b"\0" in sample


def _gitattributes() -> bytes:
    lines = [f"*{suffix} filter=lfs diff=lfs merge=lfs -text" for suffix in LFS_SUFFIXES]
    return ("\n".join(lines) + "\n").encode()


def _clean_path(value: object) -> str:
    """A repo path from a request, refusing what git or the Hub would refuse."""
    if not isinstance(value, str):
        raise HubError(400, f"invalid path: {value!r}")
    path = value.strip("/")
    parts = path.split("/")
    if not path or any(part in {"", ".", "..", ".git"} for part in parts):
        raise HubError(400, f"invalid path: {value!r}")
    return path


class _Blobs:
    """Content-addressed file contents, shared by every repo (like one LFS bucket)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise HubError(400, f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def size(self, sha256: str) -> int | None:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def put(self, data: bytes) -> str:
        """Store ``data`` (atomically: a reader never sees a partial blob); return its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.path(sha256)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(target, data)
        return sha256

    def read(self, sha256: str, start: int = 0, length: int | None = None) -> bytes:
        with self.path(sha256).open("rb") as file:
            file.seek(start)
            return file.read() if length is None else file.read(length)

    def git_oid(self, sha256: str, size: int) -> str:
        """The git blob id of a stored content, streamed so big LFS files need no memory."""
        digest = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
        with self.path(sha256).open("rb") as file:
            while chunk := file.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()


def _write_atomic(target: Path, data: bytes) -> None:
    """Write through a temporary sibling and rename, so a failure leaves the old file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Repos:
    """The repo JSON files. Writers hold ``HubServer._lock``; readers rely on atomic renames."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: RepoKey) -> Path:
        namespace, _, name = key.id.partition("/")
        if not (_NAME.fullmatch(namespace) and _NAME.fullmatch(name)) or ".." in key.id:
            raise HubError(400, f"invalid repo id: {key.id!r}")
        return self.root / f"{key.type}s" / namespace / f"{name}.json"

    def load(self, key: RepoKey) -> RepoRecord | None:
        try:
            record: RepoRecord = json.loads(self.path(key).read_text())
        except FileNotFoundError:
            return None
        return record

    def save(self, record: RepoRecord) -> None:
        target = self.path(RepoKey(record["type"], record["id"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(target, json.dumps(record, indent=1).encode())

    def delete(self, key: RepoKey) -> None:
        self.path(key).unlink()


def _history(record: RepoRecord, revision: str) -> list[CommitRecord] | None:
    """The commits up to ``revision`` (a branch, a commit id or its prefix), oldest first."""
    name = revision.removeprefix("refs/heads/")
    if name in record["branches"]:
        return record["branches"][name]
    if _COMMIT_PREFIX.fullmatch(revision):
        for commits in record["branches"].values():
            for index, commit in enumerate(commits):
                if commit["oid"].startswith(revision):
                    return commits[: index + 1]
    return None


class _Tree:
    """One commit's flat file map seen as git trees: folders exist because files are in them."""

    def __init__(self, files: dict[str, FileEntry]) -> None:
        self.files = files
        self.children: dict[str, list[str]] = {"": []}
        for path in sorted(files):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in self.children:
                    self.children[folder] = []
                    self.children["/".join(parts[: depth - 1])].append(folder)
            self.children["/".join(parts[:-1])].append(path)
        self._oids: dict[str, str] = {}

    def conflicts(self) -> list[str]:
        """Paths that are both a file and a folder, which git cannot store."""
        return sorted(path for path in self.files if path in self.children)

    def walk(self, folder: str, recursive: bool) -> list[str]:
        """Folders first (each followed by its content when recursive), then files."""
        children = self.children[folder]
        out: list[str] = []
        for sub in sorted(child for child in children if child in self.children):
            out.append(sub)
            if recursive:
                out.extend(self.walk(sub, recursive=True))
        out.extend(sorted(child for child in children if child not in self.children))
        return out

    def tree_oid(self, folder: str) -> str:
        """A stable id for a folder's content (a stand-in for git's tree sha1)."""
        if folder not in self._oids:
            digest = hashlib.sha1(usedforsecurity=False)
            for child in sorted(self.children[folder]):
                child_oid = (
                    self.tree_oid(child) if child in self.children else self.files[child]["oid"]
                )
                digest.update(f"{child.rsplit('/', 1)[-1]} {child_oid}\n".encode())
            self._oids[folder] = digest.hexdigest()
        return self._oids[folder]


def _last_commit(history: list[CommitRecord], path: str, is_folder: bool) -> CommitRecord:
    """The newest commit that changed ``path`` (or anything below it, for a folder)."""

    def view(files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        if not is_folder:
            return {path: files[path]} if path in files else {}
        prefix = path + "/" if path else ""
        return {p: e for p, e in files.items() if p.startswith(prefix)}

    for index in range(len(history) - 1, 0, -1):
        if view(history[index]["files"]) != view(history[index - 1]["files"]):
            return history[index]
    return history[0]


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` bytes asked for, ``None`` to send everything; 416 if unsatisfiable."""
    if header is None or "," in header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    unsatisfiable = HubError(
        416, f"range {header} not satisfiable", headers={"Content-Range": f"bytes */{size}"}
    )
    if not first:
        if not last or int(last) == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - int(last)), size - 1
    if int(first) >= size:
        raise unsatisfiable
    end = min(int(last), size - 1) if last else size - 1
    return (int(first), end) if end >= int(first) else None


class HubServer:
    """A Hub-compatible server on 127.0.0.1, serving from a daemon thread while entered.

    ``commits``, ``requests`` (method and path as sent, without the query string),
    ``lfs_bytes_received`` and ``bytes_served`` (per file) let tests check what the client
    did; ``fail_commit`` interrupts a publish: called with the 0-based index of every commit
    request (all repos), True answers 500 and lands nothing. A commit's ``deleted`` lists
    files, a deleted folder expanded. Beyond that: ``errors`` (handler crashes),
    ``tree_page_size``, and ``head()`` / ``snapshot()`` to read a revision from storage.
    """

    def __init__(self, storage: Path, token: str = "hf_test_token") -> None:
        self.storage = Path(storage)
        self.token = token
        self.commits: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.fail_commit: Callable[[int], bool] | None = None
        self.lfs_bytes_received = 0
        self.bytes_served: dict[str, int] = {}
        """Repo file path -> bytes of it sent by resolve (GETs, ranges included)."""
        self.errors: list[str] = []
        """Tracebacks of handler crashes (answered 500), so a test can show them."""
        self.tree_page_size = 1000
        """Entries per tree page, as on the Hub; lower it to exercise pagination."""
        self._blobs = _Blobs(self.storage / "blobs")
        self._repos = _Repos(self.storage / "repos")
        self._lock = threading.RLock()
        self._commit_requests = 0
        self._tickets: dict[str, tuple[str, int]] = {}
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError(
                "HubServer has no endpoint until it is entered (with HubServer(...) as hub)"
            )
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> HubServer:
        self.storage.mkdir(parents=True, exist_ok=True)
        self._httpd = _HttpServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="hub-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        # Keep-alive connections would otherwise leave handler threads waiting for requests.
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    # -- inspection helpers for tests ------------------------------------------------------

    def head(self, repo_id: str, revision: str = DEFAULT_BRANCH, repo_type: str = "dataset") -> str:
        """The commit id ``revision`` points to, read straight from storage."""
        return self._commit_at(RepoKey(repo_type, repo_id), revision)["oid"]

    def snapshot(
        self, repo_id: str, revision: str = DEFAULT_BRANCH, repo_type: str = "dataset"
    ) -> dict[str, bytes]:
        """Every file of ``revision`` with its content, read straight from storage."""
        files = self._commit_at(RepoKey(repo_type, repo_id), revision)["files"]
        return {path: self._blobs.read(entry["sha256"]) for path, entry in sorted(files.items())}

    def _commit_at(self, key: RepoKey, revision: str) -> CommitRecord:
        record = self._repos.load(key)
        history = _history(record, revision) if record is not None else None
        if history is None:
            raise KeyError(f"{key.type} {key.id}@{revision} does not exist")
        return history[-1]

    # -- dispatch --------------------------------------------------------------------------

    def _record_request(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def _respond(self, request: _Request) -> _Response:
        """Route a request; a crash becomes a 500 whose body is the traceback."""
        try:
            return self._route(request)
        except HubError as error:
            return error.response()
        except Exception:  # noqa: BLE001 (any crash must still answer, with its traceback)
            trace = traceback.format_exc()
            with self._lock:
                self.errors.append(trace)
            return _json(
                500, {"error": f"hub_server crashed on {request.method} {request.path}:\n{trace}"}
            )

    def _unhandled(self, request: _Request) -> HubError:
        return HubError(404, f"hub_server does not implement {request.method} {request.path}")

    def _route(self, request: _Request) -> _Response:
        segments, method = request.segments, request.method
        match segments:
            case ["api", "repos", "create"] if method == "POST":
                return self._create_repo(request)
            case ["api", "repos", "delete"] if method == "DELETE":
                return self._delete_repo(request)
            case ["api", "whoami-v2"] if method == "GET":
                return self._whoami(request)
            case ["api", "validate-yaml"] if method == "POST":
                return self._validate_yaml(request)
            case ["api", plural, namespace, name, *tail] if plural in REPO_TYPES:
                key = RepoKey(REPO_TYPES[plural], f"{unquote(namespace)}/{unquote(name)}")
                return self._route_repo_api(request, key, tail)
            case ["lfs-upload", oid] if method == "PUT":
                return self._lfs_upload(request, oid)
        web = self._web_route(segments)
        if web is not None:
            key, tail = web
            git = key.id.endswith(".git")  # LFS lives under the repo's git URL: ns/name.git
            git_key = RepoKey(key.type, key.id.removesuffix(".git"))
            match tail:
                case ["info", "lfs", "objects", "batch"] if method == "POST" and git:
                    return self._lfs_batch(request, git_key)
                case ["info", "lfs", "objects", "verify"] if method == "POST" and git:
                    return self._lfs_verify(request, git_key)
                case ["resolve", *rest] if method in {"GET", "HEAD"} and rest:
                    return self._resolve(request, key, rest)
        raise self._unhandled(request)

    @staticmethod
    def _web_route(segments: list[str]) -> tuple[RepoKey, list[str]] | None:
        """Split ``/[datasets/]ns/name/...`` (web and git paths) into the repo and the rest."""
        repo_type = "model"
        if segments and segments[0] in REPO_TYPES and REPO_TYPES[segments[0]] != "model":
            repo_type, segments = REPO_TYPES[segments[0]], segments[1:]
        if len(segments) < 3:
            return None
        return RepoKey(repo_type, f"{unquote(segments[0])}/{unquote(segments[1])}"), segments[2:]

    def _route_repo_api(self, request: _Request, key: RepoKey, tail: list[str]) -> _Response:
        method = request.method
        match tail:
            case [] if method == "GET":
                return self._repo_info(request, key, None)
            case ["revision", revision] if method == "GET":
                return self._repo_info(request, key, unquote(revision))
            case ["tree", revision, *path] if method == "GET":
                return self._tree(
                    request, key, unquote(revision), "/".join(unquote(p) for p in path)
                )
            case ["paths-info", revision] if method == "POST":
                return self._paths_info(request, key, unquote(revision))
            case ["preupload", revision] if method == "POST":
                return self._preupload(request, key, unquote(revision))
            case ["commit", revision] if method == "POST":
                return self._commit(request, key, unquote(revision))
            case ["branch", branch] if method == "POST":
                return self._create_branch(request, key, unquote(branch))
            case ["branch", branch] if method == "DELETE":
                return self._delete_branch(request, key, unquote(branch))
            case ["refs"] if method == "GET":
                return self._refs(request, key)
            case ["commits", revision] if method == "GET":
                return self._list_commits(request, key, unquote(revision))
        raise self._unhandled(request)

    # -- access ----------------------------------------------------------------------------

    def _authenticated(self, request: _Request) -> bool:
        """Whether a valid token came; an invalid one is refused outright, as the Hub does."""
        token = request.bearer()
        if token is None:
            return False
        if not secrets.compare_digest(token.encode(), self.token.encode()):
            raise HubError(401, "Invalid credentials in Authorization header")
        return True

    def _require_token(self, request: _Request) -> None:
        if not self._authenticated(request):
            raise HubError(
                401, "You must be authenticated (Authorization: Bearer <token>) to write"
            )

    def _readable(self, request: _Request, key: RepoKey) -> RepoRecord:
        """The repo, if it exists and the caller may see it (a private repo hides as missing)."""
        authenticated = self._authenticated(request)
        record = self._repos.load(key)
        if record is None:
            raise HubError(404, f"Repository {key.type} {key.id} not found", "RepoNotFound")
        if record["private"] and not authenticated:
            raise HubError(
                401, f"Repository {key.type} {key.id} not found (private)", "RepoNotFound"
            )
        return record

    def _writable(self, request: _Request, key: RepoKey) -> RepoRecord:
        self._require_token(request)
        return self._readable(request, key)

    @staticmethod
    def _resolve_history(record: RepoRecord, revision: str) -> list[CommitRecord]:
        history = _history(record, revision)
        if history is None:
            raise HubError(
                404, f"Revision {revision!r} not found in {record['id']}", "RevisionNotFound"
            )
        return history

    def _url(self, key: RepoKey) -> str:
        return f"{self.endpoint}/{URL_PREFIXES[key.type]}{key.id}"

    # -- repos -----------------------------------------------------------------------------

    @staticmethod
    def _body_repo(body: Any) -> RepoKey:
        """The repo named by a create / delete body: name, organization (else the user), type."""
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise HubError(400, "a JSON object with a 'name' is required")
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"hub_server does not serve {repo_type} repos")
        return RepoKey(repo_type, f"{body.get('organization') or USERNAME}/{body['name']}")

    def _create_repo(self, request: _Request) -> _Response:
        self._require_token(request)
        body = request.json()
        key = self._body_repo(body)
        repo_type = key.type
        visibility = body.get("visibility")
        private = (
            visibility in {"private", "protected"} if visibility else bool(body.get("private"))
        )
        with self._lock:
            if self._repos.load(key) is not None:
                # create_repo(exist_ok=True) reads "url" from this 409 answer.
                message = f"You already created this {repo_type} repo: {key.id}"
                raise HubError(409, message, fields={"url": self._url(key)})
            data = _gitattributes()
            self._blobs.put(data)
            first = _new_commit(None, "initial commit", "", {".gitattributes": _file_entry(data)})
            record: RepoRecord = {
                "type": repo_type,
                "id": key.id,
                "private": private,
                "createdAt": _now(),
                "branches": {DEFAULT_BRANCH: [first]},
            }
            self._repos.save(record)
        return _json(200, {"url": self._url(key), "name": key.id, "id": key.id})

    def _delete_repo(self, request: _Request) -> _Response:
        key = self._body_repo(request.json())
        with self._lock:
            self._writable(request, key)
            self._repos.delete(key)
        return _json(200, {})

    @staticmethod
    def _validate_yaml(request: _Request) -> _Response:
        """The card's YAML header must parse as a mapping; the Hub's own rules on its fields
        are not re-implemented here (``openmind_data.card.validate`` checks those offline)."""
        from huggingface_hub import RepoCard

        try:
            RepoCard(str(request.json()["content"]))
        except ValueError as error:
            raise HubError(400, f"invalid card metadata: {error}") from error
        return _json(200, {"errors": [], "warnings": []})

    def _whoami(self, request: _Request) -> _Response:
        if not self._authenticated(request):
            raise HubError(401, "Invalid user token")
        auth = {
            "type": "access_token",
            "accessToken": {"displayName": "hub_server", "role": "write"},
        }
        return _json(
            200,
            {"type": "user", "name": USERNAME, "fullname": "Test User", "orgs": [], "auth": auth},
        )

    def _repo_info(self, request: _Request, key: RepoKey, revision: str | None) -> _Response:
        record = self._readable(request, key)
        head = self._resolve_history(record, revision or DEFAULT_BRANCH)[-1]
        info = self._info_fields(key, record, head, with_blobs=_truthy(request.param("blobs")))
        expand = request.query.get("expand") or request.query.get("expand[]")
        if expand:
            # Like the Hub: only the properties asked for (unknown ones come back as null).
            info = {name: info.get(name) for name in ["_id", "id", *expand]}
        return _json(200, info)

    def _info_fields(
        self, key: RepoKey, record: RepoRecord, head: CommitRecord, *, with_blobs: bool
    ) -> dict[str, Any]:
        files = head["files"]
        siblings: list[dict[str, Any]] = []
        for path, entry in sorted(files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry["size"], blobId=self._api_oid(entry))
                if entry["lfs"]:  # here the Hub names the sha256 "sha256", in trees "oid"
                    sibling["lfs"] = {
                        "size": entry["size"],
                        "sha256": entry["sha256"],
                        "pointerSize": _pointer_size(entry),
                    }
            siblings.append(sibling)
        size = sum(entry["size"] for entry in files.values())
        object_id = hashlib.sha1(f"{key.type}/{key.id}".encode(), usedforsecurity=False)
        return {
            "_id": object_id.hexdigest()[:24],
            "id": key.id,
            "author": key.id.split("/")[0],
            "sha": head["oid"],
            "private": record["private"],
            "gated": False,
            "disabled": False,
            "createdAt": record["createdAt"],
            "lastModified": head["date"],
            "downloads": 0,
            "downloadsAllTime": 0,
            "likes": 0,
            "trendingScore": 0,
            "tags": [],
            "cardData": None,
            "citation": None,
            "description": None,
            "paperswithcode_id": None,
            "resourceGroup": None,
            "siblings": siblings,
            "usedStorage": size,
            "mainSize": size,
            "xetEnabled": False,
        }

    def _create_branch(self, request: _Request, key: RepoKey, branch: str) -> _Response:
        body = request.json() or {}
        start = body.get("startingPoint") if isinstance(body, dict) else None
        with self._lock:
            record = self._writable(request, key)
            if branch in record["branches"]:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            if not _NAME.fullmatch(branch.replace("/", "-")):
                raise HubError(400, f"invalid branch name: {branch!r}")
            record["branches"][branch] = list(
                self._resolve_history(record, start or DEFAULT_BRANCH)
            )
            self._repos.save(record)
        return _json(200, {})

    def _delete_branch(self, request: _Request, key: RepoKey, branch: str) -> _Response:
        with self._lock:
            record = self._writable(request, key)
            if branch == DEFAULT_BRANCH:
                raise HubError(403, "the default branch cannot be deleted")
            if record["branches"].pop(branch, None) is None:
                raise HubError(
                    404, f"Revision {branch!r} not found in {key.id}", "RevisionNotFound"
                )
            self._repos.save(record)
        return _json(200, {})

    def _refs(self, request: _Request, key: RepoKey) -> _Response:
        record = self._readable(request, key)
        branches = [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": commits[-1]["oid"]}
            for name, commits in sorted(record["branches"].items())
        ]
        return _json(200, {"branches": branches, "converts": [], "tags": [], "pullRequests": []})

    def _list_commits(self, request: _Request, key: RepoKey, revision: str) -> _Response:
        record = self._readable(request, key)
        history = self._resolve_history(record, revision)
        items = [
            {
                "id": commit["oid"],
                "authors": [{"user": USERNAME}],
                "date": commit["date"],
                "title": commit["summary"],
                "message": commit["description"],
            }
            for commit in reversed(history)
        ]
        return _json(200, items)

    # -- listing ---------------------------------------------------------------------------

    @staticmethod
    def _api_oid(entry: FileEntry) -> str:
        """What the Hub reports as a file's oid: git stores the pointer for an LFS file."""
        if entry["lfs"]:
            return git_blob_oid(lfs_pointer(entry["sha256"], entry["size"]))
        return entry["oid"]

    def _path_info(
        self, tree: _Tree, path: str, history: list[CommitRecord] | None
    ) -> dict[str, Any]:
        """One tree / paths-info item; ``history`` given means ``expand`` (adds lastCommit)."""
        is_folder = path in tree.children
        item: dict[str, Any]
        if is_folder:
            item = {"type": "directory", "oid": tree.tree_oid(path), "size": 0, "path": path}
        else:
            entry = tree.files[path]
            item = {
                "type": "file",
                "oid": self._api_oid(entry),
                "size": entry["size"],
                "path": path,
            }
            if entry["lfs"]:
                item["lfs"] = {
                    "oid": entry["sha256"],
                    "size": entry["size"],
                    "pointerSize": _pointer_size(entry),
                }
        if history is not None:
            last = _last_commit(history, path, is_folder)
            item["lastCommit"] = {"id": last["oid"], "title": last["summary"], "date": last["date"]}
        return item

    def _tree(self, request: _Request, key: RepoKey, revision: str, path: str) -> _Response:
        history = self._resolve_history(self._readable(request, key), revision)
        head = history[-1]
        tree = _Tree(head["files"])
        path = path.strip("/")
        if path not in tree.children:
            what = "is not a folder" if path in tree.files else "does not exist"
            raise HubError(
                404,
                f'{path} {what} on "{revision}"',
                "EntryNotFound",
                {"X-Repo-Commit": head["oid"]},
            )
        paths = tree.walk(path, recursive=_truthy(request.param("recursive")))
        expand = _truthy(request.param("expand"))
        cursor = int(request.param("cursor") or 0)
        page = paths[cursor : cursor + self.tree_page_size]
        items = [self._path_info(tree, p, history if expand else None) for p in page]
        headers = {"X-Repo-Commit": head["oid"]}
        if cursor + self.tree_page_size < len(paths):
            # Cursor pagination through a Link header, which the client follows as is.
            query = {name: values[0] for name, values in request.query.items()}
            query["cursor"] = str(cursor + self.tree_page_size)
            headers["Link"] = f'<{self.endpoint}{request.path}?{urlencode(query)}>; rel="next"'
        return _json(200, items, headers)

    def _paths_info(self, request: _Request, key: RepoKey, revision: str) -> _Response:
        history = self._resolve_history(self._readable(request, key), revision)
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            body = request.json()
            if not isinstance(body, dict):
                raise HubError(400, "paths-info: a JSON object with 'paths' is required")
            paths, expand = [str(p) for p in body.get("paths") or []], bool(body.get("expand"))
        else:  # the client sends a form: paths=a&paths=b&expand=false
            form = parse_qs(request.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), _truthy(form.get("expand", [""])[0])
        tree = _Tree(history[-1]["files"])
        wanted = [p.strip("/") for p in paths]
        items = [
            self._path_info(tree, p, history if expand else None)
            for p in wanted
            if p and (p in tree.files or p in tree.children)
        ]
        return _json(200, items)

    # -- uploads ---------------------------------------------------------------------------

    def _preupload(self, request: _Request, key: RepoKey, revision: str) -> _Response:
        record = self._writable(request, key)
        head = self._resolve_history(record, revision)[-1]
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("files"), list):
            raise HubError(400, "preupload: a JSON object with a 'files' list is required")
        answers = []
        for item in body["files"]:
            if not isinstance(item, dict):
                raise HubError(400, f"preupload: bad file item {item!r}")
            path = _clean_path(item.get("path"))
            try:
                sample = base64.b64decode(item.get("sample") or "", validate=True)
            except binascii.Error as error:
                raise HubError(400, f"preupload: bad base64 sample for {path}") from error
            mode = "lfs" if _is_lfs(path, int(item.get("size", 0)), sample) else "regular"
            answer: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            existing = head["files"].get(path)
            if existing is not None:
                # The client skips files whose remote oid is its own (sha256 if LFS, else git oid).
                answer["oid"] = existing["sha256"] if existing["lfs"] else existing["oid"]
            answers.append(answer)
        return _json(200, {"files": answers, "commitOid": head["oid"]})

    def _lfs_batch(self, request: _Request, key: RepoKey) -> _Response:
        self._writable(request, key)
        body = request.json()
        if not isinstance(body, dict) or body.get("operation") != "upload":
            raise HubError(400, "LFS batch: only the 'upload' operation is served")
        if "basic" not in (body.get("transfers") or ["basic"]):
            raise HubError(400, "LFS batch: only the 'basic' transfer is served")
        verify = f"{self.endpoint}/{URL_PREFIXES[key.type]}{key.id}.git/info/lfs/objects/verify"
        objects = [self._lfs_object(item, verify) for item in body.get("objects") or []]
        payload = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        response = _json(200, payload)
        response.headers["Content-Type"] = "application/vnd.git-lfs+json"
        return response

    def _lfs_object(self, item: Any, verify: str) -> dict[str, Any]:
        """The batch answer for one object: nothing to do if stored, else where to PUT it."""
        oid, size = (item.get("oid"), item.get("size")) if isinstance(item, dict) else (None, None)
        if not (isinstance(oid, str) and _SHA256.fullmatch(oid) and isinstance(size, int)):
            raise HubError(400, f"LFS batch: bad object {item!r}")
        stored = self._blobs.size(oid)
        if stored == size:
            return {"oid": oid, "size": size}  # already there: no actions, so no upload
        if stored is not None:
            message = f"object {oid} is stored with size {stored}, not {size}"
            return {"oid": oid, "size": size, "error": {"code": 422, "message": message}}
        # Like a signed S3 URL: the client PUTs there without its Authorization header.
        ticket = secrets.token_urlsafe(16)
        with self._lock:
            self._tickets[ticket] = (oid, size)
        # No "chunk_size" in the upload header: the client then sends one plain PUT.
        upload = {"href": f"{self.endpoint}/lfs-upload/{oid}?ticket={ticket}", "expires_in": 3600}
        actions = {"upload": upload, "verify": {"href": verify, "header": {}}}
        return {"oid": oid, "size": size, "authenticated": True, "actions": actions}

    def _lfs_upload(self, request: _Request, oid: str) -> _Response:
        with self._lock:
            self.lfs_bytes_received += len(request.body)
            expected = self._tickets.get(request.param("ticket") or "")
        if expected is None or expected[0] != oid:
            raise HubError(
                403, f"LFS upload of {oid}: no valid ticket (ask the batch endpoint first)"
            )
        data = request.body
        if len(data) != expected[1] or hashlib.sha256(data).hexdigest() != oid:
            raise HubError(
                400,
                f"LFS upload of {oid}: got {len(data)} bytes with sha256 "
                f"{hashlib.sha256(data).hexdigest()}, expected {expected[1]} bytes",
            )
        self._blobs.put(data)
        return _Response(200, headers={"ETag": f'"{oid}"'})

    def _lfs_verify(self, request: _Request, key: RepoKey) -> _Response:
        self._writable(request, key)
        body = request.json()
        oid, size = (body.get("oid"), body.get("size")) if isinstance(body, dict) else (None, None)
        if not (isinstance(oid, str) and _SHA256.fullmatch(oid)) or self._blobs.size(oid) != size:
            raise HubError(404, f"LFS verify: object {oid} of {size} bytes is not stored")
        return _json(200, {})

    # -- commits ---------------------------------------------------------------------------

    def _commit(self, request: _Request, key: RepoKey, branch: str) -> _Response:
        with self._lock:
            index = self._commit_requests
            self._commit_requests += 1
        if self.fail_commit is not None and self.fail_commit(index):
            message = f"hub_server: commit request #{index} failed on purpose (fail_commit)"
            return _json(500, {"error": message})
        self._require_token(request)
        if _truthy(request.param("create_pr")):
            raise HubError(400, "hub_server does not serve pull requests (create_pr)")
        header, operations = _parse_ndjson(request.body)
        # One commit at a time, all checks before any write: a refused commit changes nothing.
        with self._lock:
            record = self._readable(request, key)
            history = self._branch(record, branch)
            parent = history[-1]
            expected = header.get("parentCommit")
            if expected and not parent["oid"].startswith(str(expected)):
                message = f"parentCommit {expected} is not the head of {branch} ({parent['oid']})"
                raise HubError(412, message)
            files, change = self._apply(parent["files"], operations)
            for data in change.contents:
                self._blobs.put(data)
            summary, description = str(header["summary"]), str(header.get("description") or "")
            commit = _new_commit(parent["oid"], summary, description, files)
            history.append(commit)
            self._repos.save(record)
            self.commits.append(
                {
                    "repo_id": key.id,
                    "revision": branch,
                    "summary": summary,
                    "paths": change.added,
                    "deleted": change.deleted,
                }
            )
        url = f"{self._url(key)}/commit/{commit['oid']}"
        return _json(200, {"success": True, "commitOid": commit["oid"], "commitUrl": url})

    def _branch(self, record: RepoRecord, branch: str) -> list[CommitRecord]:
        """The commits of the branch a commit lands on (a commit id is not a branch)."""
        history = record["branches"].get(branch)
        if history is not None:
            return history
        if _history(record, branch) is not None:
            raise HubError(400, f"can only commit on a branch, not on {branch!r}")
        raise HubError(404, f"Revision {branch!r} not found in {record['id']}", "RevisionNotFound")

    def _apply(
        self, parent: dict[str, FileEntry], operations: Iterable[dict[str, Any]]
    ) -> tuple[dict[str, FileEntry], _Change]:
        """The file map after ``operations`` (in order) and what changed; nothing is stored."""
        files = dict(parent)
        change = _Change()
        for operation in operations:
            kind, value = operation.get("key"), operation.get("value") or {}
            path = _clean_path(value.get("path"))
            if kind == "file":
                data = _regular_content(path, value)
                files[path] = _file_entry(data)
                change.contents.append(data)
                change.added.append(path)
            elif kind == "lfsFile":
                files[path] = self._lfs_entry(path, value)
                change.added.append(path)
            elif kind in {"deletedFile", "deletedFolder"}:
                change.deleted.extend(_delete(files, path, folder=kind == "deletedFolder"))
            else:
                raise HubError(400, f"commit operation {kind!r} is not served by hub_server")
        conflicts = _Tree(files).conflicts()
        if conflicts:
            raise HubError(400, f"paths both a file and a folder: {conflicts}")
        return files, change

    def _lfs_entry(self, path: str, value: dict[str, Any]) -> FileEntry:
        """An lfsFile operation's entry; its object must have been PUT already."""
        oid = value.get("oid")
        if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str):
            raise HubError(400, f"{path}: an lfsFile needs a sha256 oid")
        size = self._blobs.size(oid)
        if size is None:
            raise HubError(400, f"{path}: LFS object {oid} was never uploaded")
        if value.get("size") is not None and value["size"] != size:
            raise HubError(400, f"{path}: LFS object {oid} has {size} bytes, not {value['size']}")
        return {"size": size, "sha256": oid, "oid": self._blobs.git_oid(oid, size), "lfs": True}

    # -- downloads -------------------------------------------------------------------------

    def _resolve(self, request: _Request, key: RepoKey, rest: list[str]) -> _Response:
        """Serve a file with the headers ``get_hf_file_metadata`` reads, honouring Range."""
        # HfFileSystem leaves "refs/pr/1"-like revisions unquoted: three segments.
        count = 3 if rest[0] == "refs" and len(rest) > 3 and rest[1] in {"pr", "convert"} else 1
        revision = "/".join(unquote(s) for s in rest[:count])
        path = "/".join(unquote(s) for s in rest[count:])
        head = self._resolve_history(self._readable(request, key), revision)[-1]
        entry = head["files"].get(path)
        if entry is None:
            message = f"{path} does not exist on {revision!r}"
            raise HubError(404, message, "EntryNotFound", {"X-Repo-Commit": head["oid"]})
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
            "X-Repo-Commit": head["oid"],
        }
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(entry["size"])})
        try:
            span = _parse_range(request.headers.get("Range"), entry["size"])
        except HubError as error:
            error.headers["X-Repo-Commit"] = head["oid"]
            raise
        status, first, length = 200, 0, entry["size"]
        if span is not None:
            status, first, length = 206, span[0], span[1] - span[0] + 1
            headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{entry['size']}"
        if request.method == "HEAD":
            return _Response(status, headers=headers, length=length)
        with self._lock:
            self.bytes_served[path] = self.bytes_served.get(path, 0) + length
        return _Response(status, self._blobs.read(entry["sha256"], first, length), headers)


def _new_commit(
    parent: str | None, summary: str, description: str, files: dict[str, FileEntry]
) -> CommitRecord:
    """A commit with a fresh 40-hex id (``snapshot_download`` checks that format)."""
    date = _now()
    seed = json.dumps(
        [parent, summary, description, date, secrets.token_hex(8), sorted(files.items())]
    )
    oid = hashlib.sha1(seed.encode(), usedforsecurity=False).hexdigest()
    return {
        "oid": oid,
        "parent": parent,
        "summary": summary,
        "description": description,
        "date": date,
        "files": files,
    }


@dataclass
class _Change:
    """What a commit does: paths written and deleted, regular contents to store."""

    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    contents: list[bytes] = field(default_factory=list)


def _regular_content(path: str, value: dict[str, Any]) -> bytes:
    """The bytes of a "file" operation (sent inline, base64)."""
    if value.get("encoding", "base64") != "base64":
        raise HubError(400, f"{path}: only base64 file content is served")
    try:
        return base64.b64decode(value.get("content") or "", validate=True)
    except binascii.Error as error:
        raise HubError(400, f"{path}: bad base64 content") from error


def _delete(files: dict[str, FileEntry], path: str, *, folder: bool) -> list[str]:
    """Remove a file or everything below a folder; the Hub refuses to delete nothing."""
    if folder:
        doomed = sorted(p for p in files if p.startswith(path + "/"))
    else:
        doomed = [path] if path in files else []
    if not doomed:
        what = "folder" if folder else "file"
        raise HubError(404, f"A {what} with this name doesn't exist: {path}", "EntryNotFound")
    for name in doomed:
        del files[name]
    return doomed


def _parse_ndjson(body: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The commit payload: a header line, then one operation per line."""
    header: dict[str, Any] = {}
    operations: list[dict[str, Any]] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as error:
            raise HubError(400, f"commit payload line {number} is not JSON: {error}") from error
        if not isinstance(item, dict):
            raise HubError(400, f"commit payload line {number} is not an object")
        if item.get("key") == "header":
            header = item.get("value") or {}
        else:
            operations.append(item)
    if not header.get("summary"):
        raise HubError(400, "commit payload: the header needs a summary")
    return header, operations


class _HttpServer(ThreadingHTTPServer):
    """Binds 127.0.0.1 on a free port and knows its HubServer."""

    daemon_threads = True

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, as httpx expects; the body is always read whole first so a
    refused request leaves the connection in a clean state. Nagle is off: headers and body
    leave in two writes, which would otherwise wait ~40 ms for the client's delayed ACK."""

    protocol_version = "HTTP/1.1"
    timeout = 60
    disable_nagle_algorithm = True
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        with self.server.hub._lock:
            self.server.hub._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.hub._lock:
                self.server.hub._connections.discard(self.connection)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it so
        """Silent: the tests read ``HubServer.requests`` instead."""

    def _dispatch(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        hub._record_request(self.command, split.path)
        body = self._read_body()
        request = _Request(
            method=self.command,
            path=split.path,
            segments=[s for s in split.path.split("/") if s],
            query=parse_qs(split.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
        )
        self._send(hub._respond(request))

    def _read_body(self) -> bytes:
        """The request body, by Content-Length or chunked (httpx streams file uploads)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in {b"\r\n", b"\n", b""}:
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        length = response.length if response.length is not None else len(response.body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD" and response.body:
            try:
                self.wfile.write(response.body)
            except ConnectionError:
                self.close_connection = True


@contextlib.contextmanager
def logged_in(storage: Path, monkeypatch: pytest.MonkeyPatch, token: str) -> Iterator[HubServer]:
    """A server over ``storage`` with the client pointed at it and logged in through
    ``HF_TOKEN``, for one test."""
    with HubServer(storage, token=token) as server:
        patch_endpoint(monkeypatch, server.endpoint)
        monkeypatch.setenv("HF_TOKEN", server.token)
        yield server


def patch_endpoint(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point ``huggingface_hub`` and ``datasets`` at ``endpoint`` for one test (the module
    docstring says why each setting is needed); monkeypatch undoes it all."""
    # Import first: a module imported after HF_ENDPOINT is set would keep the test endpoint
    # as the "original" value that monkeypatch restores.
    from huggingface_hub import HfFileSystem

    try:
        from datasets import config as datasets_config
    except ImportError:
        datasets_config = None
    endpoint = endpoint.rstrip("/")
    _patch_hub(monkeypatch, endpoint)
    if datasets_config is not None:
        _patch_datasets(monkeypatch, datasets_config, endpoint)
    _patch_environment(monkeypatch, endpoint)
    HfFileSystem.clear_instance_cache()


def _patch_hub(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """The values huggingface_hub read from the environment at import."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    host = (urlsplit(endpoint).hostname or "").lower()
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {host})
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(endpoint)})
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", _NO_TOKEN_FILE)


def _patch_datasets(monkeypatch: pytest.MonkeyPatch, config: Any, endpoint: str) -> None:
    """The values datasets read at import, plus the calls that would leave the machine."""
    monkeypatch.setattr(config, "HF_ENDPOINT", endpoint)
    monkeypatch.setattr(
        config, "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"
    )
    monkeypatch.setattr(config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(config, "USE_PARQUET_EXPORT", False)
    monkeypatch.setattr(config, "HF_UPDATE_DOWNLOAD_COUNTS", False)


def _patch_environment(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """The same settings for child processes, and no real token from the environment."""
    tokens = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE")
    for name in (*tokens, "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_UPDATE_DOWNLOAD_COUNTS", "0")
    monkeypatch.setenv("HF_TOKEN_PATH", _NO_TOKEN_FILE)


_NO_TOKEN_FILE = str(Path(tempfile.gettempdir()) / f"hub-server-no-token-{os.getpid()}")
"""A token file that never exists, so a developer's saved token is never sent."""
