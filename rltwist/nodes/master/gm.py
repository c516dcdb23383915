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
                            (down nodes and configured nodes that never registered too)
    GET  /players/<userid>  online or not, role node, birth region, name, generation
    POST /hotfix            every node applies the new codefix lists now
    POST /hotfix/rollback   {"fix_id"?} every node undoes that list (default: the last
                            list master itself applied); it must be each node's last one
    POST /config/reload     every node reloads its game config tables, all or nothing
    POST /datafix           {"kinds"?} every node runs pending data fixes on its online
                            entities of those kinds (default: every kind it registered)

``GET /nodes`` shows per node ``code_version`` (``<version>+<fix id>…``), ``config_version``
(``<n>-<digest>``), ``hotfix_errors`` (lists rejected there: file, id, module, error) and
``config_errors`` (problems of its last rejected table reload).

The four broadcasts call master and every registered node at once (nodes marked down or
stopped are listed under ``skipped``, not waited for), each call bounded by ``"timeout"``
(default 10 s).  The answer has one entry per node under ``nodes``, the names of the nodes
that failed under ``failed``, and ``ok``; the status is 200 when every called node
succeeded and 502 otherwise (a node that did not answer, or rejected a list or the tables).
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
from rltwist.nodes.common.hotfix import hotfix_of
from rltwist.nodes.master.metrics import sid_label
from rltwist.nodes.master.players import PlayerLookupError, player_view

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.master.masterflow import Answer, Masterflow

MAX_BODY = 1024 * 1024
BROADCAST_TIMEOUT = 10.0


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

    def _timeout(self, body: dict[str, Any], default: float = BROADCAST_TIMEOUT) -> float:
        timeout = body.get("timeout", default)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0 < timeout <= 600:
            raise HTTPError(400, "bad_field", "field 'timeout' must be 0 < t <= 600",
                            field="timeout")
        return float(timeout)

    def _fanout(self, answers: dict[str, Answer], skipped: dict[str, str],
                succeeded: Callable[[Any], bool]) -> tuple[int, dict[str, Any]]:
        """The common answer of a broadcast: per-node entries, ``failed``, ``ok``."""
        nodes: dict[str, Any] = {}
        for name, answer in answers.items():
            if not answer.ok:
                nodes[name] = {"ok": False, "error": answer.error}
                continue
            result = answer.result
            entry = dict(result) if isinstance(result, dict) else {"result": result}
            entry["ok"] = bool(succeeded(result))
            nodes[name] = entry
        failed = sorted(n for n, e in nodes.items() if not e["ok"])
        payload = {"ok": not failed, "failed": failed, "skipped": skipped, "nodes": nodes}
        return (200 if not failed else 502), payload

    @staticmethod
    def _group(nodes: dict[str, Any], key: str) -> dict[str, list[str]]:
        """``{value of key: [nodes]}`` over the nodes that answered."""
        groups: dict[str, list[str]] = {}
        for name, entry in nodes.items():
            if key in entry:
                groups.setdefault(str(entry[key]), []).append(name)
        return {value: sorted(names) for value, names in groups.items()}

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
            status = self.node.status()
            me = {**self.node.info(), "state": "up", "sid": None, "last_heartbeat_age": 0.0,
                  "registered_at": self.node.started_at, "status": status,
                  "code_version": status.get("code_version", ""),
                  "config_version": status.get("config_version", ""),
                  "hotfix_errors": status.get("hotfix_errors", []),
                  "config_errors": status.get("config_errors", [])}
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
            # Every node master knows, down ones included, and every configured node that
            # has not registered: Prometheus then sees up == 0 for a node that died, even
            # one that died while master was away.
            me = self.node.me
            out = [{"targets": [f"{me.host}:{me.metrics_port}"],
                    "labels": {"node": me.name, "kind": "master", "sid": ""}}]
            listed = {me.name}
            for name, r in sorted(self.flow.nodes.items()):
                listed.add(name)
                out.append({"targets": [f"{r.host}:{r.metrics_port}"],
                            "labels": {"node": name, "kind": r.kind,
                                       "sid": sid_label(r.kind, r.number)}})
            for name, c in sorted(self.node.config.nodes.items()):
                if name not in listed:
                    out.append({"targets": [f"{c.host}:{c.metrics_port}"],
                                "labels": {"node": name, "kind": c.kind,
                                           "sid": sid_label(c.kind, c.number)}})
            return out
        return await self._guard(request, targets)

    @app.route("/players/<userid>", methods=["GET"])
    async def player(self, request: IRequest, userid: str) -> bytes:
        async def view() -> dict[str, Any]:
            try:
                uid = int(userid)
            except ValueError:
                uid = 0
            if uid <= 0 or uid >= 1 << 63:
                raise HTTPError(400, "bad_userid", f"not a userid: {userid!r}")
            try:
                found = await player_view(self.node, uid)
            except PlayerLookupError as e:
                raise HTTPError(503, "unavailable", str(e), source=e.what) from None
            if found is None:
                raise HTTPError(404, "unknown_player", f"no player {uid}: neither Redis "
                                "nor the role database knows it", userid=uid)
            return found
        return await self._guard(request, view)

    # -- hot reload broadcasts (seed §12-14) ------------------------------------------

    @app.route("/hotfix", methods=["POST"])
    async def hotfix(self, request: IRequest) -> bytes:
        async def apply() -> tuple[int, dict[str, Any]]:
            timeout = self._timeout(self._body(request))
            answers, skipped = await self.flow.broadcast("hotfix", "apply", timeout=timeout)
            status, payload = self._fanout(answers, skipped, lambda r: not r.get("errors"))
            payload["code_versions"] = self._group(payload["nodes"], "code_version")
            return status, payload
        return await self._guard(request, apply)

    @app.route("/hotfix/rollback", methods=["POST"])
    async def hotfix_rollback(self, request: IRequest) -> bytes:
        async def rollback() -> tuple[int, dict[str, Any]]:
            body = self._body(request)
            timeout = self._timeout(body)
            fix_id = body.get("fix_id")
            if fix_id is not None and (not isinstance(fix_id, str) or not fix_id):
                raise HTTPError(400, "bad_field", "field 'fix_id' must be a non-empty string",
                                field="fix_id")
            if fix_id is None:
                fix_id = hotfix_of(self.node).last_live()
                if fix_id is None:
                    raise HTTPError(409, "nothing_to_roll_back",
                                    "master applied no fix list live; name the list with "
                                    '{"fix_id": ...} to roll it back on the other nodes')
            answers, skipped = await self.flow.broadcast("hotfix", "rollback", fix_id,
                                                         timeout=timeout)
            status, payload = self._fanout(answers, skipped, lambda r: r.get("ok"))
            payload["fix_id"] = fix_id
            payload["code_versions"] = self._group(payload["nodes"], "code_version")
            return status, payload
        return await self._guard(request, rollback)

    @app.route("/config/reload", methods=["POST"])
    async def config_reload(self, request: IRequest) -> bytes:
        async def reload() -> tuple[int, dict[str, Any]]:
            timeout = self._timeout(self._body(request))
            answers, skipped = await self.flow.broadcast("sharedatad", "reload",
                                                         timeout=timeout)
            status, payload = self._fanout(answers, skipped, lambda r: r.get("ok"))
            payload["config_versions"] = self._group(payload["nodes"], "config_version")
            return status, payload
        return await self._guard(request, reload)

    @app.route("/datafix", methods=["POST"])
    async def datafix(self, request: IRequest) -> bytes:
        async def fix() -> tuple[int, dict[str, Any]]:
            body = self._body(request)
            timeout = self._timeout(body, default=60.0)
            kinds = body.get("kinds")
            if kinds is not None and (not isinstance(kinds, list) or not all(
                    isinstance(k, str) and k for k in kinds)):
                raise HTTPError(400, "bad_field", "field 'kinds' must be a list of entity "
                                "kinds", field="kinds")
            answers, skipped = await self.flow.broadcast("hotfix", "datafix", kinds,
                                                         timeout=timeout)
            status, payload = self._fanout(answers, skipped, lambda r: r.get("ok"))
            totals: dict[str, dict[str, int]] = {}
            for entry in payload["nodes"].values():
                for kind, report in entry.get("kinds", {}).items():
                    total = totals.setdefault(kind, {"entities": 0, "fixed": 0, "failed": 0})
                    for key in total:
                        total[key] += int(report.get(key, 0))
            payload["totals"] = totals
            return status, payload
        return await self._guard(request, fix)
