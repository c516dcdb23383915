"""The GM HTTP API on master (Klein): JSON in, JSON out, bearer token on every endpoint
except ``GET /health`` and ``GET /metrics``.

    GET  /health            liveness (no token)
    GET  /metrics           master's Prometheus text (no token)
    GET  /nodes             every registered node with state and versions
    DELETE /nodes/<name>    decommission a node that is not running: it leaves the name
                            table of every node (409 while it runs)
    POST /login/close       refuse new logins          POST /login/open   allow them again
    POST /shutdown          start the ordered shutdown; on a stuck phase: retry, or
                            {"force": true} to go on without the nodes that did not report
    GET  /shutdown          progress: phase, per-node state, reports in arrival order
    POST /call              {"node","service","method","args"[, "timeout"]} one operator call
    GET  /sd                Prometheus HTTP service discovery of every node's metrics port
                            (down nodes and configured nodes that never registered too)
    GET  /players/<userid>  online or not, role node, birth region, name, generation
    POST /players/<userid>/kick   {"reason"?} log an online player out; the client gets
                            KickNotify{KICK_GM, reason}
    POST /hotfix            every node applies the new codefix lists now
    POST /hotfix/rollback   {"fix_id"?} every node undoes that list (default: the last
                            list master itself applied); it must be each node's last one
    POST /config/reload     every node reloads its game config tables, all or nothing
    POST /datafix           {"kinds"?} every node runs pending data fixes on its online
                            entities of those kinds (default: every kind it registered)

``GET /nodes`` shows per node ``code_version`` (``<version>+<fix id>…``), ``config_version``
(``<n>-<digest>``), ``hotfix_errors`` (lists rejected there: file, id, module, error) and
``config_errors`` (problems of its last rejected table reload).

Request bodies are JSON objects of at most ``MAX_BODY`` bytes, refused (413) while they
arrive — by their Content-Length, or as soon as a chunked body passes the bound — so an
oversized body is never buffered; JSON nested deeper than ``MAX_DEPTH`` is a 400.

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
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from klein import Klein
from prometheus_client.twisted import MetricsResource
from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request

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
from rltwist.protocols import pb
from rltwist.redis import GAME_STEP_FINISH, RedisError

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.master.masterflow import Answer, Masterflow

log = Logger()

MAX_BODY = 1024 * 1024
#: deepest nesting of arrays and objects a GM body may have (no endpoint needs more; the
#: JSON parser, msgpack and the JSON writer all recurse)
MAX_DEPTH = 32
BROADCAST_TIMEOUT = 10.0
KICK_TIMEOUT = 10.0
MAX_KICK_REASON = 200


class BoundedRequest(Request):
    """A GM request whose body may not exceed ``MAX_BODY`` bytes: refused with 413 and a
    closed connection as soon as its headers or its chunks say it is larger, before the
    body is buffered (twisted.web would buffer any size, then hand it over)."""

    max_body = MAX_BODY
    _received = 0
    _refused = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body:
            self._refuse(length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse(self._received)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            return  # answered already; the connection is closing
        super().requestReceived(command, path, version)

    def _refuse(self, size: int) -> None:
        self._refused = True
        self.content = cast(Any, BytesIO())  # nothing of the body is kept
        # curl sends "Expect: 100-continue" for large bodies: no "go ahead" after the 413
        self.requestHeaders.removeHeader(b"Expect")
        body = json.dumps({"error": "body_too_large", "message": f"request body of "
                           f"{size} bytes or more is over {self.max_body} bytes"}).encode()
        log.warn("GM request from {peer} refused: body of {size} bytes or more (limit "
                 "{limit})", peer=self.getClientAddress(), size=size, limit=self.max_body)
        transport: Any = self.channel.transport
        transport.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json"
                        b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body))
        transport.loseConnection()


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Does *value* nest lists and dicts deeper than *limit*? (Iterative: the point is
    not to recurse on hostile input.)"""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


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


def _parse_userid(text: str) -> int:
    try:
        userid = int(text)
    except ValueError:
        userid = -1
    if not 0 < userid < 2**63 or not text.isdigit():
        raise HTTPError(400, "bad_userid", f"{text!r} is not a userid")
    return userid


def _cluster_error(e: ClusterError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of a failed cluster call, naming node, service, method."""
    status = (404 if isinstance(e, UnknownNode) else
              504 if isinstance(e, CallTimeout) else
              503 if isinstance(e, NodeUnreachable) else 502)
    payload: dict[str, Any] = {"error": type(e).__name__, "message": str(e), "node": e.node,
                               "service": e.service, "method": e.method}
    if isinstance(e, RemoteError):
        payload["kind"] = e.kind
    return status, payload


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
        self._metrics = MetricsResource(registry=node.registry)

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
            except RecursionError:
                raise HTTPError(400, "bad_json", f"body nests deeper than {MAX_DEPTH} "
                                "levels") from None
            if _too_deep(data):
                raise HTTPError(400, "bad_json", f"body nests deeper than {MAX_DEPTH} levels")
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
    def metrics(self, request: IRequest) -> IResource:
        return self._metrics

    @app.route("/players/<userid>/kick", methods=["POST"])
    async def kick_player(self, request: IRequest, userid: str) -> bytes:
        async def kick() -> dict[str, Any]:
            uid = _parse_userid(userid)
            body = self._body(request)
            timeout = self._timeout(body, default=KICK_TIMEOUT)
            reason = body.get("reason", "kicked by an operator")
            if not isinstance(reason, str) or not 0 < len(reason) <= MAX_KICK_REASON:
                raise HTTPError(400, "bad_field", f"field 'reason' must be a string of 1-"
                                f"{MAX_KICK_REASON} characters", field="reason")
            try:
                user = await self.node.redis_state().get_user(uid)
            except RedisError as e:
                raise HTTPError(503, "redis_unavailable", f"cannot read the player's "
                                f"state: {e}") from None
            if user is None or user.state != GAME_STEP_FINISH:
                raise HTTPError(404, "not_online", f"player {uid} is not online",
                                userid=uid, state=None if user is None else user.state)
            try:
                outcome = await self.node.cluster.call(
                    user.node, "gateway", "kick", uid, reason, pb.KickReason.KICK_GM,
                    timeout=timeout)
            except ClusterError as e:
                status, payload = _cluster_error(e)
                raise HTTPError(status, payload.pop("error"), payload.pop("message"),
                                **payload) from None
            log.info("GM kick of {userid} on {node}: {outcome} ({reason})", userid=uid,
                     node=user.node, outcome=outcome, reason=reason)
            return {"userid": uid, "node": user.node, "result": outcome}
        return await self._guard(request, kick)

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

    @app.route("/nodes/<name>", methods=["DELETE"])
    async def decommission(self, request: IRequest, name: str) -> bytes:
        def remove() -> dict[str, Any]:
            try:
                record = self.flow.decommission(name)
            except KeyError:
                raise HTTPError(404, "unknown_node", f"no node named {name!r}",
                                node=name) from None
            except ValueError as e:
                raise HTTPError(409, "node_running", str(e), node=name) from None
            return {"removed": name, "last_state": record.state if record else None}
        return await self._guard(request, remove)

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
                return _cluster_error(e)
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
            for name in sorted(self.flow.configured() - listed):  # not decommissioned ones
                c = self.node.config.nodes[name]
                out.append({"targets": [f"{c.host}:{c.metrics_port}"],
                            "labels": {"node": name, "kind": c.kind,
                                       "sid": sid_label(c.kind, c.number)}})
            return out
        return await self._guard(request, targets)

    @app.route("/players/<userid>", methods=["GET"])
    async def player(self, request: IRequest, userid: str) -> bytes:
        async def view() -> dict[str, Any]:
            uid = _parse_userid(userid)
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
