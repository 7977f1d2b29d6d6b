"""make run's local OpenID Connect provider, for portal sign-in without Entra: oidc-provider-mock
(PyPI, requirements-dev.txt) in a child process on 127.0.0.1, stopped by its PID.

Its sign-in page (``/oauth2/authorize``) is a form: a button per predefined user
(:data:`DEV_USERS`), a field for any other ``sub`` (that user gets no role), and *Deny* (the
callback then gets ``error=access_denied``). Every client id and client secret is accepted. The
predefined users carry the claims Entra puts in the portal's ID tokens:

- ``dev-operator``: the operators' tenant (:data:`DEV_OPERATOR_TENANT_ID`), app role
  ``Portal.Operator``: an operator;
- ``dev-user``: the same tenant, no role: not an operator;
- ``customer-admin``: a customer's tenant (:data:`DEV_CUSTOMER_TENANT_ID`), app role
  ``Portal.TenantAdmin``.

The provider signs ID tokens with RS256 and a key of its own (``/jwks``), puts the ``nonce`` in
them (and requires one), and its issuer is ``http://127.0.0.1:PORT`` (from the request's host:
always reach it as 127.0.0.1). oidc-provider-mock 0.3 ignores PKCE; the child wraps it in
:class:`PkceCheck`, which refuses a code whose ``code_verifier`` does not match the
``code_challenge`` it was issued for, as Entra does.

Usage::

    with OidcProviderProcess() as provider:        # a free port
        apply_portal_defaults(os.environ, provider.issuer)

    python -m devtools.oidc_provider [--port 9400]  # in the foreground, until Ctrl-C
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from devtools.children import stop_child

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "DEV_CLIENT_ID",
    "DEV_CLIENT_SECRET",
    "DEV_CUSTOMER_TENANT_ID",
    "DEV_OPERATOR_TENANT_ID",
    "DEV_USERS",
    "OidcProviderError",
    "OidcProviderProcess",
    "PkceCheck",
    "apply_portal_defaults",
    "portal_environment",
    "uses_local_provider",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9400  # oidc-provider-mock's own default

DEV_CLIENT_ID = "scim-portal-dev"
DEV_CLIENT_SECRET = "local-provider-takes-any-secret"  # not a secret: the local provider accepts any
DEV_OPERATOR_TENANT_ID = "11111111-1111-4111-8111-111111111111"
DEV_CUSTOMER_TENANT_ID = "22222222-2222-4222-8222-222222222222"
DEV_USERS: dict[str, dict[str, object]] = {
    "dev-operator": {
        "oid": "aaaaaaaa-0000-4000-8000-000000000001",
        "tid": DEV_OPERATOR_TENANT_ID,
        "name": "Dev Operator",
        "preferred_username": "operator@localhost",
        "email": "operator@localhost",
        "roles": ["Portal.Operator"],
    },
    "dev-user": {
        "oid": "aaaaaaaa-0000-4000-8000-000000000002",
        "tid": DEV_OPERATOR_TENANT_ID,
        "name": "Dev User (no role)",
        "preferred_username": "user@localhost",
        "email": "user@localhost",
        "roles": [],
    },
    "customer-admin": {
        "oid": "bbbbbbbb-0000-4000-8000-000000000001",
        "tid": DEV_CUSTOMER_TENANT_ID,
        "name": "Customer Admin",
        "preferred_username": "admin@customer.example",
        "email": "admin@customer.example",
        "roles": ["Portal.TenantAdmin"],
    },
}


class OidcProviderError(RuntimeError):
    """The local provider could not be started (not installed, early exit, timeout)."""


# ---- the settings make run gives the app --------------------------------------------------------


def uses_local_provider(environ: MutableMapping[str, str]) -> bool:
    """Whether portal sign-in is left to make run (``PORTAL_OIDC_CLIENT_ID`` unset or empty): a
    developer who set it (a real app registration) keeps theirs."""
    return not (environ.get("PORTAL_OIDC_CLIENT_ID") or "").strip()


def portal_environment(issuer: str) -> dict[str, str]:
    """The portal sign-in settings for the local provider at ``issuer``."""
    return {
        "PORTAL_OIDC_AUTHORITY": issuer,
        "PORTAL_OIDC_CLIENT_ID": DEV_CLIENT_ID,
        "PORTAL_OIDC_CLIENT_SECRET": DEV_CLIENT_SECRET,
        "PORTAL_OPERATOR_TENANT_ID": DEV_OPERATOR_TENANT_ID,
    }


def apply_portal_defaults(environ: MutableMapping[str, str], issuer: str) -> list[str]:
    """Point portal sign-in at the local provider unless :func:`uses_local_provider` says the
    developer configured another; returns the names set."""
    if not uses_local_provider(environ):
        return []
    values = portal_environment(issuer)
    environ.update(values)
    return sorted(values)


# ---- PKCE, which oidc-provider-mock 0.3 does not check ------------------------------------------


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class PkceCheck:
    """WSGI middleware: remembers the ``code_challenge`` of each authorization code the provider
    issues (from the redirect of a POST to ``/oauth2/authorize``) and answers ``invalid_grant`` at
    ``/oauth2/token`` when the ``code_verifier`` does not match it (RFC 7636 §4.6)."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self._challenges: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, request: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path, method = request.get("PATH_INFO", ""), request.get("REQUEST_METHOD", "")
        if method == "POST" and path == "/oauth2/token":
            return self._token(request, start_response)
        if method == "POST" and path == "/oauth2/authorize":
            query = parse_qs(request.get("QUERY_STRING", ""))
            challenge = query.get("code_challenge", [""])[0]
            challenge_method = query.get("code_challenge_method", ["plain"])[0]

            def remember(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                location = next((value for name, value in headers if name.lower() == "location"), "")
                code = parse_qs(urlsplit(location).query).get("code", [""])[0]
                if challenge and code:
                    with self._lock:
                        self._challenges[code] = (challenge, challenge_method)
                return start_response(status, headers, exc_info)

            return self.app(request, remember)
        return self.app(request, start_response)

    def _token(self, request: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        length = int(request.get("CONTENT_LENGTH") or 0)
        body = request["wsgi.input"].read(length) if length > 0 else b""
        request["wsgi.input"] = io.BytesIO(body)  # the provider reads the form again
        form = parse_qs(body.decode("utf-8", errors="replace"))
        code = form.get("code", [""])[0]
        with self._lock:
            expected = self._challenges.pop(code, None)
        if expected is not None:
            verifier = form.get("code_verifier", [""])[0]
            challenge, challenge_method = expected
            answer = s256(verifier) if challenge_method == "S256" else verifier
            if not verifier or answer != challenge:
                payload = json.dumps({"error": "invalid_grant", "error_description": "PKCE verification failed"})
                start_response("400 Bad Request", [("Content-Type", "application/json"), ("Cache-Control", "no-store")])
                return [payload.encode()]
        return self.app(request, start_response)


def build_app() -> WSGIApplication:
    """oidc-provider-mock with :data:`DEV_USERS`, nonces required, behind :class:`PkceCheck`."""
    import oidc_provider_mock  # type: ignore[import-untyped]

    users = [oidc_provider_mock.User(sub=sub, claims=dict(claims)) for sub, claims in DEV_USERS.items()]
    app = oidc_provider_mock.app(require_nonce=True, user_claims=users)
    return PkceCheck(app)


# ---- the child process ---------------------------------------------------------------------------


def _discovery_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", "/.well-known/openid-configuration")
        response = connection.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        connection.close()


class OidcProviderProcess:
    """One provider child process (``python -m devtools.oidc_provider``), owned by this object and
    stopped by its PID. ``port`` 0: the child binds a free port and reports it."""

    def __init__(self, port: int = 0, *, host: str = DEFAULT_HOST, startup_timeout: float = 30.0) -> None:
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None
        self._log: Any = None

    @property
    def issuer(self) -> str:
        if self.port is None:
            raise OidcProviderError("the OpenID Connect provider is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _output(self, limit: int = 4000) -> str:
        if self._tmpdir is None:
            return ""
        with contextlib.suppress(OSError):
            return (self._tmpdir / "provider.log").read_text(errors="replace")[-limit:]
        return ""

    def start(self) -> OidcProviderProcess:
        """Start the child and wait until its discovery document answers; OidcProviderError if not."""
        if self.running:
            return self
        self._tmpdir = Path(tempfile.mkdtemp(prefix="oidc-provider-"))
        ready = self._tmpdir / "port"
        self._log = open(self._tmpdir / "provider.log", "wb")  # noqa: SIM115 - closed in stop()
        command = [
            sys.executable,
            "-m",
            "devtools.oidc_provider",
            "--host",
            self.host,
            "--port",
            str(self.requested_port),
            "--ready-file",
            str(ready),
        ]
        try:
            self.proc = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # Ctrl-C in the terminal doesn't reach it; stopped by PID
            )
        except OSError as exc:
            self._cleanup()
            raise OidcProviderError(f"could not run {sys.executable}: {exc}") from exc
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.proc.poll() is not None:
                output, code = self._output(), self.proc.returncode
                self._cleanup()
                raise OidcProviderError(f"the OpenID Connect provider exited with code {code}:\n{output}")
            with contextlib.suppress(OSError, ValueError):
                self.port = int(ready.read_text())
            if self.port is not None and _discovery_answers(self.host, self.port, timeout=0.5):
                return self
            if time.monotonic() > deadline:
                output = self._output()
                self.stop()
                raise OidcProviderError(
                    f"the OpenID Connect provider did not answer within {self.startup_timeout:.0f}s:\n{output}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        stop_child(self.proc, timeout=timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> OidcProviderProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<OidcProviderProcess {'pid=' + str(self.pid) + ' ' + self.issuer if self.running else 'stopped'}>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.oidc_provider", description="Run the local OpenID Connect provider until Ctrl-C."
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0: a free port")
    parser.add_argument("--ready-file", help="write the port here once listening (for the parent process)")
    args = parser.parse_args(argv)

    import werkzeug.serving

    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # http on 127.0.0.1, as oidc-provider-mock's own CLI
    server = werkzeug.serving.make_server(args.host, args.port, build_app(), threaded=True)
    issuer = f"http://{args.host}:{server.server_port}"
    print(f"OpenID Connect provider: {issuer} (users: {', '.join(DEV_USERS)})", file=sys.stderr, flush=True)
    if args.ready_file:  # written whole, then renamed: the parent never reads half a port
        partial = Path(f"{args.ready_file}.partial")
        partial.write_text(str(server.server_port))
        partial.replace(args.ready_file)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
