"""A browser-like client of the tenant portal that calls the registered Functions entry point.

:class:`PortalClient` builds ``func.HttpRequest`` objects for ``/portal/...`` and hands them to
the ``portal`` function that ``function_app.app`` registered (as the Functions host would), keeps
the cookies a browser would keep (every ``Set-Cookie`` of an answer; ``Max-Age=0`` removes one;
each is sent back to the paths under its ``Path`` only), and reads the CSRF token of the last
page for the next form. :class:`Page` reads an HTML answer: elements by
id, forms, the visible text.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import azure.functions as func

from scim.functions.runtime import Runtime
from scim.portal.http import CONTENT_SECURITY_POLICY
from scim.portal.sessions import OPERATOR, SessionCookies, new_session
from tests.functions_client import REGISTERED

PORTAL_FUNCTION = REGISTERED["portal"]
COOKIE = "scim_portal"
SETUP_COOKIE = "scim_portal_setup"


class _Reader(HTMLParser):
    """Collects elements with an id (their attributes and text), forms and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, dict[str, Any]] = {}
        self.forms: list[dict[str, Any]] = []
        self.text: list[str] = []
        self._open: list[tuple[str, dict[str, Any]]] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: (v if v is not None else "") for k, v in attrs}
        element = {"tag": tag, "attrs": values, "text": ""}
        if "id" in values:
            self.by_id[values["id"]] = element
        if tag == "form":
            self.forms.append({"attrs": values, "inputs": {}, "buttons": []})
        if tag in ("input", "textarea", "select") and self.forms and "name" in values:
            self.forms[-1]["inputs"].setdefault(values["name"], values.get("value", ""))
        if tag == "button" and self.forms:
            self.forms[-1]["buttons"].append(values)
        if tag in ("script", "style"):
            self._skip += 1
        if tag not in ("input", "br", "meta", "link", "img", "line", "rect"):
            self._open.append((tag, element))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                break

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.text.append(data)
        for _, element in self._open:
            element["text"] += data


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    cookies_set: list[str] = field(default_factory=list)
    """Every ``Set-Cookie`` of this answer (``headers`` holds one of them)."""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def location(self) -> str:
        return self.headers.get("location", "")

    def page(self) -> Page:
        return Page(self.text)


class Page:
    """An HTML page as a test reads it."""

    def __init__(self, source: str) -> None:
        self.source = source
        reader = _Reader()
        reader.feed(source)
        self.by_id = reader.by_id
        self.forms = reader.forms
        self.text = " ".join(" ".join(reader.text).split())

    def value(self, element_id: str) -> str:
        return str(self.by_id[element_id]["attrs"].get("value", ""))

    def element_text(self, element_id: str) -> str:
        return " ".join(str(self.by_id[element_id]["text"]).split())

    def has(self, element_id: str) -> bool:
        return element_id in self.by_id

    def csrf_token(self) -> str:
        found = re.search(r'name="csrf_token" value="([^"]*)"', self.source)
        assert found, "no CSRF token on the page"
        return html.unescape(found.group(1))

    def form(self, action: str) -> dict[str, Any]:
        for form in self.forms:
            if form["attrs"].get("action") == action:
                return form
        raise AssertionError(f"no form posting to {action}")


def _on_path(request_path: str, cookie_path: str) -> bool:
    """RFC 6265 5.1.4: whether a cookie of ``cookie_path`` goes with a request of ``request_path``."""
    base = cookie_path.rstrip("/")
    return request_path in (cookie_path, base) or request_path.startswith(base + "/")


@dataclass
class PortalClient:
    """One browser: its cookies, and the CSRF token of the last page it read."""

    base: str = "http://127.0.0.1:7071"
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookies: list[str] = field(default_factory=list)
    """Every ``Set-Cookie`` received, in order."""
    cookie_paths: dict[str, str] = field(default_factory=dict)
    """The ``Path`` of each cookie kept (``/portal`` when not set)."""
    csrf: str | None = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        form: dict[str, str] | list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Response:
        parts = urlsplit(url)
        assert parts.path.lower().startswith("/portal"), url
        rest = parts.path[len("/portal") :].lstrip("/")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        all_headers = dict(headers or {})
        sent = {k: v for k, v in self.cookies.items() if _on_path(parts.path, self.cookie_paths.get(k, "/portal"))}
        if sent:
            all_headers.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in sent.items()))
        body = raw if raw is not None else (urlencode(form).encode() if form is not None else b"")
        if form is not None:
            all_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        request = func.HttpRequest(
            method=method,
            url=f"{self.base}{parts.path}" + (f"?{parts.query}" if parts.query else ""),
            headers=all_headers,
            params=params,
            route_params={"path": rest} if rest else {},
            body=body,
        )
        answer = await PORTAL_FUNCTION(request)
        cookies = list(answer.headers.get_all("Set-Cookie"))
        response = Response(
            answer.status_code, {k.lower(): v for k, v in answer.headers.items()}, answer.get_body() or b"", cookies
        )
        for cookie in cookies:
            self._keep_cookie(cookie)
        if response.headers.get("content-type", "").startswith("text/html"):
            found = re.search(r'name="csrf_token" value="([^"]*)"', response.text)
            if found and found.group(1):
                self.csrf = html.unescape(found.group(1))
        return response

    def _keep_cookie(self, header: str | None) -> None:
        if not header:
            return
        self.set_cookies.append(header)
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0]
        path = re.search(r"(?i);\s*path=([^;]*)", header)
        if re.search(r"(?i)max-age=0\b", header) or not value:
            self.cookies.pop(name, None)
            self.cookie_paths.pop(name, None)
        else:
            self.cookies[name] = value
            self.cookie_paths[name] = path.group(1).strip() if path else "/portal"

    async def get(self, url: str, **kw: Any) -> Response:
        return await self.request("GET", url, **kw)

    async def post(self, url: str, form: dict[str, str] | None = None, *, csrf: bool | str = True) -> Response:
        """POST a form; ``csrf=True`` adds the token of the last page read, a string that one."""
        fields = dict(form or {})
        if csrf is True and self.csrf:
            fields["csrf_token"] = self.csrf
        elif isinstance(csrf, str):
            fields["csrf_token"] = csrf
        return await self.request("POST", url, form=fields)

    async def open_link(self, link: str) -> Response:
        """Open a setup link and click Continue on its page: the answer to Continue (303 to the
        tenant page, or 410), or the page's answer when it shows none (an old-form link's 410).

        ``link``: its URL or its secret. The fragment form (``…/portal/setup#scimsl_…``, what
        ``portal_setup_url`` makes) or a bare secret: the page is ``GET /portal/setup`` (the
        fragment is not sent) and Continue posts the link in the ``link`` field (as the portal's
        script fills it in); the old form (``…/portal/setup/scimsl_…``, :func:`old_link`): the
        page and Continue of its own URL."""
        shown = await self.view_link(link)
        if shown.status != 200:
            return shown
        return await self.continue_link(link, shown)

    async def view_link(self, link: str, method: str = "GET") -> Response:
        """Open a setup link's page only (what a mail scanner does)."""
        return await self.request(method, setup_path(link))

    async def continue_link(
        self,
        link: str,
        shown: Response | None = None,
        *,
        token: str | None = None,
        field: str | None = None,
        **headers: str,
    ) -> Response:
        """Click Continue on a setup link's page (``shown``): POST its form, with its token (or
        ``token``), the link in its ``link`` field (or ``field``; not for the old form) and the
        headers Chromium sends for it (``Origin: null``, the pages' referrer policy being
        ``no-referrer``, and ``Sec-Fetch-Site: same-origin``), or ``headers``."""
        path = setup_path(link)
        fields = dict(shown.page().form(path)["inputs"]) if shown is not None else {}
        if path == SETUP_PAGE:
            fields["link"] = link if field is None else field
        if token is not None:
            fields["setup_token"] = token
        sent = {"Origin": "null", "Sec-Fetch-Site": "same-origin", **headers}
        return await self.request("POST", path, form=fields, headers={k: v for k, v in sent.items() if v})


SETUP_PAGE = "/portal/setup"


def old_link(secret: str) -> str:
    """A setup link of the old form (``/portal/setup/{secret}``, handed out before the fragment form)."""
    return f"{SETUP_PAGE}/{secret}"


def setup_path(link: str) -> str:
    """The path a browser requests for a setup link (its URL or its secret): ``/portal/setup``
    (the fragment is never sent), or an old-form link's own path."""
    found = re.search(r"/portal/setup/([^/#?]+)$", link)
    return old_link(found.group(1)) if found else SETUP_PAGE


# ---- shared by the portal's tests ---------------------------------------------------------------

LINK_REFUSED = "This setup link is not valid: it was used, expired or revoked; ask your provider for a new one."
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def assert_security_headers(response: Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    assert "Traceback" not in response.text


async def new_tenant(runtime: Runtime) -> tuple[str, str]:
    """A fresh tenant (a random name) and its Secret Token."""
    name = "p" + uuid.uuid4().hex[:12]
    return name, await runtime.tenants.create(name)


async def make_link(runtime: Runtime, tenant: str, *, minutes: int = 60, now: datetime | None = None) -> str:
    secret, _ = await runtime.portal_links.create(tenant, timedelta(minutes=minutes), "operator:test", now=now)
    return secret


async def signed_in(runtime: Runtime, tenant: str) -> PortalClient:
    """A browser that opened a setup link of ``tenant`` and read its page."""
    browser = PortalClient()
    opened = await browser.open_link(await make_link(runtime, tenant))
    assert opened.status == 303 and opened.location == f"/portal/t/{tenant}", opened.text
    page = await browser.get(opened.location)
    assert page.status == 200, page.text
    return browser


async def operator_browser(runtime: Runtime, now: datetime | None = None) -> PortalClient:
    """A browser holding an operator's session, its cookie sealed here (signing in with Microsoft:
    tests/test_portal_signin.py)."""
    cookies = SessionCookies.for_base_url(await runtime.portal_secrets.session_key(), runtime.settings.public_base_url)
    session = new_session(OPERATOR, "operator:ops@example.com", now or datetime.now(UTC))
    browser = PortalClient()
    browser.cookies[COOKIE] = cookies.seal(session)
    browser.csrf = session.csrf_token()
    return browser


async def audit_actions(runtime: Runtime, tenant: str) -> list[str]:
    return [entry.action for entry in (await runtime.audit.page(tenant, limit=100)).entries]


async def audit_text(runtime: Runtime, tenant: str) -> str:
    return json.dumps([entry.to_json() for entry in (await runtime.audit.page(tenant, limit=100)).entries])
