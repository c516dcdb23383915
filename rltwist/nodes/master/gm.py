"""The GM HTTP API on master (Klein): JSON in, JSON out, bearer token on every endpoint
except ``GET /health`` and ``GET /metrics``.

    GET  /health            liveness (no token)
    GET  /metrics           master's Prometheus text (no token)
    GET  /nodes             every registered node with state and versions
    POST /login/close       refuse new logins          POST /login/open   allow them again
    POST /shutdown          start the ordered shutdown; on a stuck phase: retry, or
                            {"force": true} to go on without the nodes that did not report
    GET  /shutdown          progress: phase, per-node state, reports in arrival order
    POST /call              {"node","service","method","args"[, "timeout"]} one operator call
    GET  /sd                Prometheus HTTP service discovery of every node's metrics port
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from klein import Klein
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.iweb import IRequest

from rltwist.cluster import (
    CallTimeout,
    ClusterError,
    NodeUnreachable,
    RemoteError,
    UnknownNode,
)

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.master.masterflow import Masterflow

MAX_BODY = 1024 * 1024


class HTTPError(Exception):
    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.extra = status, error, message, extra


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def _respond(request: IRequest, status: int, payload: Any) -> bytes:
    body = json.dumps(payload, default=_json_default, sort_keys=True).encode() + b"\n"
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    return body


class GMApi:
    app = Klein()

    def __init__(self, node: Node, flow: Masterflow) -> None:
        self.node = node
        self.flow = flow
        self.token = node.config.master.gm_token.encode()

    def resource(self) -> Any:
        return self.app.resource()

    # -- plumbing -------------------------------------------------------------------------

    def _authorized(self, request: IRequest) -> bool:
        header = request.getHeader(b"Authorization") or b""
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.token)

    def _body(self, request: IRequest, required: tuple[str, ...] = ()) -> dict[str, Any]:
        raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(raw) > MAX_BODY:
            raise HTTPError(413, "body_too_large", f"request body over {MAX_BODY} bytes")
        if not raw.strip():
            data: Any = {}
        else:
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                raise HTTPError(400, "bad_json", f"body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "bad_json", "body must be a JSON object")
        for field in required:
            if field not in data:
                raise HTTPError(400, "missing_field", f"missing field {field!r}", field=field)
        return data

    async def _guard(self, request: IRequest, fn: Callable[[], Any], auth: bool = True) -> bytes:
        if auth and not self._authorized(request):
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="rltwist-gm"')
            return _respond(request, 401, {"error": "unauthorized",
                                           "message": "missing or wrong bearer token"})
        try:
            result = fn()
            if hasattr(result, "__await__"):
                result = await result
            status, payload = result if isinstance(result, tuple) else (200, result)
            return _respond(request, status, payload)
        except HTTPError as e:
            return _respond(request, e.status, {"error": e.error, "message": e.message, **e.extra})

    # -- endpoints ------------------------------------------------------------------------

    @app.route("/health", methods=["GET"])
    async def health(self, request: IRequest) -> bytes:
        return await self._guard(request, lambda: {"ok": True, "node": self.node.name},
                                 auth=False)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        body = generate_latest(self.node.registry)
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"Content-Length", str(len(body)).encode())
        return body

    @app.route("/nodes", methods=["GET"])
    async def nodes(self, request: IRequest) -> bytes:
        def listing() -> dict[str, Any]:
            now = self.flow._now()
            me = {**self.node.info(), "state": "up", "sid": None, "last_heartbeat_age": 0.0,
                  "registered_at": self.node.started_at, "status": self.node.status()}
            return {"login_open": self.flow.login_open,
                    "nodes": [me, *(r.to_json(now) for _, r in sorted(self.flow.nodes.items()))]}
        return await self._guard(request, listing)

    @app.route("/login/close", methods=["POST"])
    async def login_close(self, request: IRequest) -> bytes:
        def close() -> dict[str, Any]:
            self.flow.set_login_open(False)
            return {"login_open": False}
        return await self._guard(request, close)

    @app.route("/login/open", methods=["POST"])
    async def login_open(self, request: IRequest) -> bytes:
        def open_() -> dict[str, Any]:
            if self.flow.shutdown is not None:
                raise HTTPError(409, "shutting_down", "logins stay closed during shutdown")
            self.flow.set_login_open(True)
            return {"login_open": True}
        return await self._guard(request, open_)

    @app.route("/shutdown", methods=["POST"])
    async def shutdown_start(self, request: IRequest) -> bytes:
        def start() -> tuple[int, dict[str, Any]]:
            force = bool(self._body(request).get("force", False))
            sd = self.flow.start_shutdown(force=force)
            return 202, sd.to_json()
        return await self._guard(request, start)

    @app.route("/shutdown", methods=["GET"])
    async def shutdown_status(self, request: IRequest) -> bytes:
        def status() -> dict[str, Any]:
            sd = self.flow.shutdown
            return sd.to_json() if sd is not None else {"state": "not started"}
        return await self._guard(request, status)

    @app.route("/call", methods=["POST"])
    async def call(self, request: IRequest) -> bytes:
        async def do_call() -> tuple[int, dict[str, Any]]:
            body = self._body(request, ("node", "service", "method"))
            node, service, method = body["node"], body["service"], body["method"]
            args = body.get("args", [])
            for name in ("node", "service", "method"):
                if not isinstance(body[name], str) or not body[name]:
                    raise HTTPError(400, "bad_field", f"field {name!r} must be a non-empty "
                                    "string", field=name)
            if not isinstance(args, list):
                raise HTTPError(400, "bad_field", "field 'args' must be a list", field="args")
            timeout = body.get("timeout", 10.0)
            if not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
                raise HTTPError(400, "bad_field", "field 'timeout' must be 0 < t <= 600",
                                field="timeout")
            if node != self.node.name and node not in self.node.cluster.addresses:
                raise HTTPError(404, "unknown_node", f"no node named {node!r}", node=node)
            try:
                result = await self.node.cluster.call(node, service, method, *args,
                                                      timeout=float(timeout))
            except ClusterError as e:
                status = (404 if isinstance(e, UnknownNode) else
                          504 if isinstance(e, CallTimeout) else
                          503 if isinstance(e, NodeUnreachable) else 502)
                payload = {"error": type(e).__name__, "message": str(e), "node": e.node,
                           "service": e.service, "method": e.method}
                if isinstance(e, RemoteError):
                    payload["kind"] = e.kind
                return status, payload
            return 200, {"result": result}
        return await self._guard(request, do_call)

    @app.route("/sd", methods=["GET"])
    async def sd(self, request: IRequest) -> bytes:
        def targets() -> list[dict[str, Any]]:
            me = self.node.me
            out = [{"targets": [f"{me.host}:{me.metrics_port}"],
                    "labels": {"node": me.name, "kind": "master", "sid": ""}}]
            for name, r in sorted(self.flow.nodes.items()):
                sid = r.number if r.kind in ("map", "guild", "mail", "rolecity") else None
                out.append({"targets": [f"{r.host}:{r.metrics_port}"],
                            "labels": {"node": name, "kind": r.kind,
                                       "sid": "" if sid is None else str(sid)}})
            return out
        return await self._guard(request, targets)
