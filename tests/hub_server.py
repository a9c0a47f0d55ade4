"""A minimal Hugging Face Hub-compatible HTTP server on loopback, for offline push/pull tests.

It implements only what ``huggingface_hub`` 2.4 (pinned by requirements.txt) calls for ``create_repo``,
``create_commit``/``upload_folder`` (regular, non-LFS uploads: base64 in the ndjson commit),
``snapshot_download``/``hf_hub_download`` and timm's ``hf-hub:`` loading: repo create, validate-yaml, preupload,
commit, revision info, tree and resolve. These are internal Hub endpoints: re-check them when the pin moves.
Use: ``with HubServer() as hub:`` then set ``HF_ENDPOINT=hub.url`` and ``HF_HUB_DISABLE_XET=1``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40
    private: bool = False
    sdk: str | None = None


class HubServer:
    """In-memory Hub: ``repos[(repo_type, repo_id)] -> Repo``; ``requests`` logs ``(method, path)``."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_HEAD(self) -> None:
                hub._handle(self, "HEAD")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- request handling -----------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = urlparse(h.path).path
        self.requests.append((method, path))
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        with self.lock:
            status, headers, payload = self._route(method, path, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(status)
        headers.setdefault("Content-Type", "application/json")
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(data)

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, dict, object]:
        if method == "POST" and path == "/api/repos/create":
            return self._create(json.loads(body))
        if method == "POST" and path == "/api/validate-yaml":
            return 200, {}, {}
        m = re.fullmatch(
            r"/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(preupload|commit|revision|tree)/([^/]+)(/.*)?)?", path)
        if m:  # no operation: the repo's info at main
            kind, repo_id, op, rev = TYPES[m[1]], m[2], m[3] or "revision", unquote(m[4] or "main")
            repo = self.repos.get((kind, repo_id))
            if repo is None:
                return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
            if op == "preupload":
                files = json.loads(body)["files"]
                return 200, {}, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                           for f in files]}
            if op == "commit":
                return self._commit(kind, repo_id, repo, body)
            if rev not in ("main", repo.sha):
                return 404, {"X-Error-Code": "RevisionNotFound"}, {"error": "Revision not found"}
            if op == "tree":  # the files and sub-folders right under ``/tree/<rev>/<folder>``
                folder = unquote(m[5] or "").strip("/")
                prefix = folder + "/" if folder else ""
                below = {p.removeprefix(prefix): d for p, d in repo.files.items() if p.startswith(prefix)}
                subdirs = sorted({prefix + p.split("/")[0] for p in below if "/" in p})
                return 200, {}, [{"type": "directory", "path": d, "oid": "0" * 40} for d in subdirs] + [
                    {"type": "file", "path": prefix + p, "size": len(d), "oid": git_blob_sha(d)}
                    for p, d in sorted(below.items()) if "/" not in p]
            return 200, {}, {"id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": repo.private,
                             "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
        m = re.fullmatch(r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and method in ("GET", "HEAD"):
            kind = TYPES.get(m[1] or "models")
            repo = self.repos.get((kind, m[2]))
            if repo is None:
                return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
            data = repo.files.get(unquote(m[4]))
            if data is None:
                return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.sha}, {"error": "Entry not found"}
            return 200, {"X-Repo-Commit": repo.sha, "ETag": f'"{git_blob_sha(data)}"',
                         "Content-Type": "application/octet-stream"}, data
        return 404, {}, {"error": f"not implemented: {method} {path}"}

    def _create(self, req: dict) -> tuple[int, dict, object]:
        kind = req.get("type") or "model"
        repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else f"user/{req['name']}"
        prefix = "" if kind == "model" else f"{kind}s/"
        if (kind, repo_id) in self.repos:
            return 409, {}, {"error": "You already created this repo", "url": f"{self.url}/{prefix}{repo_id}"}
        self.repos[(kind, repo_id)] = Repo(private=req.get("visibility") == "private", sdk=req.get("sdk"))
        return 200, {}, {"url": f"{self.url}/{prefix}{repo_id}", "name": repo_id}

    def _commit(self, kind: str, repo_id: str, repo: Repo, body: bytes) -> tuple[int, dict, object]:
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                repo.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                repo.files.pop(item["value"]["path"], None)
            elif item["key"] != "header":
                return 400, {}, {"error": f"unsupported commit entry {item['key']}"}
        repo.sha = hashlib.sha1(repo.sha.encode() + body).hexdigest()
        prefix = "" if kind == "model" else f"{kind}s/"
        return 200, {}, {"commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{repo.sha}", "commitOid": repo.sha,
                         "pullRequestUrl": None}


def use_hub(monkeypatch, endpoint: str | None, cache: str, offline: bool = False) -> None:
    """Point huggingface_hub (which reads its env vars at import) at ``endpoint`` and a private ``cache``."""
    from huggingface_hub import constants

    if endpoint is not None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
