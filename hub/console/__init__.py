"""The console, served by ``hub console``: a task force's feed, map and charts, and an auditor's view of the audit
log, in a browser.

Each user signs in as a hub principal with that principal's own Kafka password, and the console reads Kafka with that
login and no other: the broker checks the password at sign-in, and its ACLs decide what each page can show, so the
console can never show what the principal could not read from Kafka itself. Logins live only in this process's
memory, behind a random session token in a signed, HTTP-only cookie. Pages are rendered on the server (Flask and
Jinja); the one script polls for new feed items. The base map ships with the project (:mod:`hub.console.basemap`).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, session, url_for

from hub import audit_queries
from hub.access import AUDITOR, MECHANISM, TASK_FORCE
from hub.console import basemap
from hub.console.feed import Filters, FeedRow, FeedView, doses_by_port, drug_mix, read_feed, weight_by_port_month
from hub.exceptions import AuthenticationFailedError, ConsoleSignInError, KafkaUnavailableError
from hub.kafka import make_consumer
from hub.settings import HubSettings

#: How the console names itself in the audit log's query records.
COMPONENT = "hub console"
#: Sign-in checks the password against the broker: a wrong one must not keep the page waiting long.
SIGN_IN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SignedIn:
    """A signed-in user: the principal, and the settings that connect as it."""

    principal: str
    settings: HubSettings

    @property
    def unit_id(self) -> str:
        return self.principal.removeprefix(TASK_FORCE)

    @property
    def is_auditor(self) -> bool:
        return self.principal.startswith(AUDITOR)

    @property
    def home(self) -> str:
        return "audit" if self.is_auditor else "feed"


def sign_in(settings: HubSettings, principal: str, password: str) -> SignedIn:
    """Check ``principal``'s password with the broker (a SCRAM login) and return the user."""
    if not principal.startswith((TASK_FORCE, AUDITOR)) or not password:
        raise ConsoleSignInError(f"{principal or 'nobody'} cannot sign in here: the console serves task forces "
                                 "(tf-<unit>) and auditors (auditor-<name>) so far")
    protocol = "SASL_SSL" if settings.security_protocol.endswith("SSL") else "SASL_PLAINTEXT"
    user = settings.model_copy(update={"security_protocol": protocol, "sasl_mechanism": MECHANISM,
                                       "sasl_username": principal, "sasl_password": password,
                                       "connect_timeout_s": min(settings.connect_timeout_s, SIGN_IN_TIMEOUT_S)})
    try:
        make_consumer(settings=user, group_id=None).close()
    except AuthenticationFailedError:
        raise ConsoleSignInError("the broker refused that principal and password") from None
    return SignedIn(principal, user)


def _date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    except ValueError:
        abort(400, f"not a date: {text!r} (use YYYY-MM-DD)")


def _filters() -> Filters:
    args = request.args
    return Filters(kind=args.get("kind", ""), drug=args.get("drug", ""), port=args.get("port", ""),
                   since=_date(args.get("since")), until=_date(args.get("until")))


def _placed(rows: list[FeedRow]) -> list[tuple[FeedRow, float, float]]:
    """The rows the map can place, with their SVG coordinates (pointers have no place)."""
    return [(row, *basemap.project(row.longitude, row.latitude)) for row in rows
            if row.latitude is not None and row.longitude is not None]


def create_app(settings: HubSettings) -> Flask:
    """The console's WSGI app, reading the cluster ``settings`` name (their login is never used)."""
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)  # sessions last as long as this process
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    users: dict[str, SignedIn] = {}
    lock = threading.Lock()

    def current() -> SignedIn | None:
        with lock:
            return users.get(session.get("token", ""))

    def feed_of(user: SignedIn) -> FeedView:
        try:
            return read_feed(user.settings, user.unit_id)
        except (KafkaUnavailableError, AuthenticationFailedError) as exc:
            abort(503, f"cannot read the feed: {exc}")

    @app.after_request
    def _secure(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:; style-src 'self'"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index() -> Any:
        user = current()
        return redirect(url_for(user.home if user else "signin_form"))

    @app.get("/signin")
    def signin_form() -> Any:
        return render_template("signin.html", error=None)

    @app.post("/signin")
    def signin() -> Any:
        principal = request.form.get("principal", "").strip()
        try:
            user = sign_in(settings, principal, request.form.get("password", ""))
        except (ConsoleSignInError, KafkaUnavailableError) as exc:
            return render_template("signin.html", error=exc.message, principal=principal), 401
        token = secrets.token_urlsafe(32)
        with lock:
            users[token] = user
        session["token"] = token
        return redirect(url_for(user.home))

    @app.post("/signout")
    def signout() -> Any:
        with lock:
            users.pop(session.pop("token", ""), None)
        return redirect(url_for("signin_form"))

    def feed_page(template: str, **figures: Callable[[list[FeedRow]], Any]) -> Any:
        """A page of the signed-in unit's feed under the request's filters (sign-in first, if need be)."""
        user = current()
        if user is None:
            return redirect(url_for("signin_form"))
        if user.is_auditor:
            abort(403, "an auditor reads the audit log, not a task force's feed")
        view, filters = feed_of(user), _filters()
        rows = view.filtered(filters)
        return render_template(template, user=user, view=view, rows=rows, filters=filters, choices=view.choices(),
                               **{name: figure(rows) for name, figure in figures.items()})

    @app.get("/feed")
    def feed() -> Any:
        return feed_page("feed.html")

    @app.get("/feed/count")
    def feed_count() -> Any:
        user = current()
        if user is None or user.is_auditor:
            abort(401)
        return jsonify(count=len(feed_of(user).rows))

    @app.get("/map")
    def map_view() -> Any:
        return feed_page("map.html", points=_placed, by_port_month=weight_by_port_month, doses=doses_by_port,
                         mix=drug_mix, outlines=lambda _: basemap.outlines(), width=lambda _: basemap.WIDTH,
                         height=lambda _: basemap.height())

    @app.get("/audit")
    def audit() -> Any:
        """The auditor's view: the chain's integrity, and who-saw or releases when asked (each query is recorded on
        audit.queries under the auditor's principal before it runs)."""
        user = current()
        if user is None:
            return redirect(url_for("signin_form"))
        if not user.is_auditor:
            abort(403, "only an auditor may read the audit log")
        record_id, agency = request.args.get("record", "").strip(), request.args.get("agency", "").strip()
        try:
            check = audit_queries.verify_chains(user.settings, COMPONENT)
            who = audit_queries.who_saw(user.settings, record_id, COMPONENT, withheld=True) if record_id else None
            released = audit_queries.releases(user.settings, agency, COMPONENT) if agency else None
        except (KafkaUnavailableError, AuthenticationFailedError) as exc:
            abort(503, f"cannot read the audit log: {exc}")
        return render_template("audit.html", user=user, check=check, record_id=record_id, who=who, agency=agency,
                               released=released)

    return app
