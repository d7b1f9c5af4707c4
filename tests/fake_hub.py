"""A tiny Hugging Face Hub on 127.0.0.1 for round-trip tests (never the network).

It implements what huggingface_hub 2.x needs for `create_repo`, `upload_folder`, `hf_hub_download`,
`snapshot_download` and timm's `hf-hub:` loading: repo create, preupload (every file "regular", so
no LFS or Xet transfer), commit (ndjson), resolve (HEAD and GET), revision info, tree and
validate-yaml. Repos live in memory, one snapshot per commit.

    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.url, ...}     # give it to a subprocess (HF_ENDPOINT is read at import)
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}       # repo_id -> {"main": oid, "commits": {oid: {path: bytes}}}
        self.requests: list[str] = []          # "METHOD path" of every request, for assertions
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):       # keep pytest output clean
                pass

            def do_HEAD(self):
                hub._handle(self, "HEAD")

            def do_GET(self):
                hub._handle(self, "GET")

            def do_POST(self):
                hub._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- helpers -------------------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo["commits"][repo["main"] if revision == "main" else revision]

    def _snapshot(self, repo_id: str, revision: str):
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None
        oid = repo["main"] if revision == "main" else revision
        return oid, repo["commits"].get(oid)

    @staticmethod
    def _send(h, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)) if not (headers or {}).get("Content-Length") else
                      headers["Content-Length"])
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _json(self, h, obj, status: int = 200):
        self._send(h, status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _error(self, h, status: int, code: str, head: bool = False):
        self._send(h, status, json.dumps({"error": code}).encode(),
                   {"Content-Type": "application/json", "X-Error-Code": code}, head=head)

    # -- routes --------------------------------------------------------------------------------
    def _handle(self, h, method: str) -> None:
        path = unquote(urlparse(h.path).path)
        with self.lock:
            self.requests.append(f"{method} {path}")
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        repo = r"(?P<repo>[^/]+/[^/]+)"
        if method == "POST" and path == "/api/repos/create":
            data = json.loads(body or b"{}")
            repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
            with self.lock:
                self.repos.setdefault(repo_id, {"main": None, "commits": {}})
            return self._json(h, {"url": f"{self.url}/{repo_id}", "name": repo_id})
        if method == "POST" and path == "/api/validate-yaml":
            return self._json(h, {})
        m = re.fullmatch(rf"/api/models/{repo}/preupload/(?P<rev>[^/]+)", path)
        if method == "POST" and m:
            files = json.loads(body)["files"]
            return self._json(h, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                            for f in files]})
        m = re.fullmatch(rf"/api/models/{repo}/commit/(?P<rev>[^/]+)", path)
        if method == "POST" and m:
            return self._commit(h, m["repo"], body)
        m = re.fullmatch(rf"/api/models/{repo}/revision/(?P<rev>.+)", path)
        if method == "GET" and m:
            oid, files = self._snapshot(m["repo"], m["rev"])
            if files is None:
                return self._error(h, 404, "RepoNotFound" if m["repo"] not in self.repos else "RevisionNotFound")
            return self._json(h, {"id": m["repo"], "modelId": m["repo"], "sha": oid, "private": False,
                                  "siblings": [{"rfilename": p} for p in sorted(files)]})
        m = re.fullmatch(rf"/api/models/{repo}/tree/(?P<rev>[^/]+)(?P<sub>/.*)?", path)
        if method == "GET" and m:
            oid, files = self._snapshot(m["repo"], m["rev"])
            if files is None:
                return self._error(h, 404, "RepoNotFound")
            return self._json(h, [{"type": "file", "path": p, "size": len(b),
                                   "oid": hashlib.sha1(b).hexdigest()} for p, b in sorted(files.items())])
        m = re.fullmatch(rf"/{repo}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
        if method in ("GET", "HEAD") and m:
            oid, files = self._snapshot(m["repo"], m["rev"])
            if files is None:
                return self._error(h, 404, "RepoNotFound", head=method == "HEAD")
            if m["file"] not in files:
                return self._error(h, 404, "EntryNotFound", head=method == "HEAD")
            data = files[m["file"]]
            return self._send(h, 200, data, {"X-Repo-Commit": oid, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                                             "Content-Type": "application/octet-stream"}, head=method == "HEAD")
        return self._error(h, 404, "NotImplementedInFakeHub", head=method == "HEAD")

    def _commit(self, h, repo_id: str, body: bytes):
        if repo_id not in self.repos:
            return self._error(h, 404, "RepoNotFound")
        with self.lock:
            repo = self.repos[repo_id]
            files = dict(repo["commits"].get(repo["main"], {}))
            for line in body.splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "deletedFile":
                    files.pop(value["path"], None)
                elif item["key"] != "header":
                    return self._error(h, 400, f"Unsupported{item['key']}")
            oid = hashlib.sha1(json.dumps(sorted((p, hashlib.sha256(b).hexdigest()) for p, b in files.items())).encode()
                               + str(len(repo["commits"])).encode()).hexdigest()
            repo["commits"][oid] = files
            repo["main"] = oid
        return self._json(h, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                              "pullRequestUrl": None})
