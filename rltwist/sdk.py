"""The dev SDK: what a platform SDK server does for login, for local runs and tests.

A client gets ``(openid, token)`` from the SDK; the login node asks the SDK whether the
token belongs to the openid. Dev tokens are ``hex(HMAC-SHA256(dev_sdk_secret, openid))``.
The login node verifies that formula in-process when no ``login.sdk_url`` is set, or asks
an SDK server over HTTP (``POST {sdk_url}`` with ``{"openid", "token"}`` -> ``{"ok": bool}``)
— this module also provides such a server (``python -m rltwist.sdk``). The login node takes
only a JSON ``true`` as a yes (``"true"``, ``1``, ``"false"`` are a no), and answers
RETRY_LATER when the answer is not HTTP 200, not a JSON object, late, or longer than 64 KiB
(``rltwist.nodes.login.loginhandler.SDK_MAX_BODY``).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest


def dev_token(secret: str, openid: str) -> str:
    """The dev SDK's token for *openid*."""
    return hmac.new(secret.encode(), openid.encode(), hashlib.sha256).hexdigest()


def check_dev_token(secret: str, openid: str, token: str) -> bool:
    """Is *token* the dev token of *openid*? Compared as bytes: ``compare_digest`` raises
    on a str with non-ASCII characters, and a client picks the token."""
    return hmac.compare_digest(dev_token(secret, openid).encode(),
                               token.encode("utf-8", "surrogatepass"))


class DevSDK:
    """``POST /verify`` {"openid","token"} -> {"ok": true|false} (JSON booleans);
    ``GET /token/<openid>`` issues one."""

    app = Klein()

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def _json(self, request: IRequest, status: int, payload: Any) -> bytes:
        body = json.dumps(payload).encode()
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", str(len(body)).encode())
        return body

    @app.route("/verify", methods=["POST"])
    def verify(self, request: IRequest) -> bytes:
        try:
            data = json.loads(request.content.read(65536))
            openid, token = str(data["openid"]), str(data["token"])
        except (ValueError, KeyError, TypeError):
            return self._json(request, 400, {"ok": False, "error": "need openid and token"})
        return self._json(request, 200, {"ok": check_dev_token(self.secret, openid, token)})

    @app.route("/token/<openid>", methods=["GET"])
    def token(self, request: IRequest, openid: str) -> bytes:
        return self._json(request, 200, {"openid": openid,
                                         "token": dev_token(self.secret, openid)})


#: the dev SDK reads its secret from here (or from ``--secret-file``), never from its
#: command line, which every user of the machine can read in ``ps``
SECRET_ENV = "RLTWIST_DEV_SDK_SECRET"


def read_secret(secret_file: str | None, environ: dict[str, str] | None = None) -> str:
    """The dev SDK secret: the first line of *secret_file*, else ``RLTWIST_DEV_SDK_SECRET``;
    ValueError when there is neither."""
    import os

    if secret_file:
        with open(secret_file) as f:
            secret = f.readline().strip()
    else:
        secret = (os.environ if environ is None else environ).get(SECRET_ENV, "")
    if not secret:
        raise ValueError(f"no dev SDK secret: pass --secret-file PATH or set {SECRET_ENV}")
    return secret


def listen(reactor: Any, port: int, secret: str, host: str = "127.0.0.1") -> Any:
    """Serve the dev SDK on host:port; returns the listening port."""
    from twisted.web.server import Site

    from rltwist.net import LISTEN_BACKLOG

    site = Site(DevSDK(secret).app.resource())
    site.noisy = False
    # every login asks the SDK; a burst of them must not overflow the accept queue
    return reactor.listenTCP(port, site, backlog=LISTEN_BACKLOG, interface=host)


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from rltwist.readiness import notify_ready

    p = argparse.ArgumentParser(description="rltwist dev SDK server (tokens are "
                                "hex(HMAC-SHA256(secret, openid)))")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--secret-file", help=f"file whose first line is dev_sdk_secret from the "
                   f"cluster config (default: the {SECRET_ENV} environment variable)")
    args = p.parse_args(argv)
    try:
        secret = read_secret(args.secret_file)
    except (OSError, ValueError) as e:
        p.error(str(e))
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    listen(reactor, args.port, secret, args.host)
    print(f"dev SDK ready on http://{args.host}:{args.port}/verify", flush=True)
    notify_ready({"url": f"http://{args.host}:{args.port}/verify"})
    reactor.run()


if __name__ == "__main__":
    main()
