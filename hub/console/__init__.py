"""The console, served by ``hub console``: a task force's feed, alerts, map and charts; an agency's alerts (to
acknowledge or resolve) and the releases of its records; and an auditor's view of the audit log, in a browser.

Each user signs in as a hub principal with that principal's own Kafka password, and the console reads Kafka with that
login and no other: the broker checks the password at sign-in, and its ACLs decide what each page can show, so the
console can never show what the principal could not read from Kafka itself. Logins live only in this process's
memory, behind a random session token in a signed, HTTP-only cookie. Pages are rendered on the server (Flask and
Jinja); the one script polls for new items, and a task force's feed is kept per user and read incrementally
(:class:`hub.console.feed.LiveFeed`), outside the unit's consumer group. The base map ships with the project
(:mod:`hub.console.basemap`).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, session, url_for
from pydantic import ValidationError

from consumers.exceptions import FeedMissingError
from consumers.stages.alerts import ALLOWED
from hub import audit_queries
from hub.access import AGENCY, AUDITOR, MECHANISM, TASK_FORCE
from hub.alerts import AgencyFeed, act_on_alert, read_agency_feed
from hub.console import basemap
from hub.console.feed import Filters, FeedRow, FeedView, LiveFeed, doses_by_port, drug_mix, weight_by_port_month
from hub.exceptions import AuthenticationFailedError, ConsoleSignInError, HubError, KafkaUnavailableError
from hub.kafka import make_consumer
from hub.settings import HubSettings
from schemas.codec import problems_of
from schemas.models import AlertActionKind, AlertStatus, DeconflictionAlert

#: How the console names itself in the audit log's query records.
COMPONENT = "hub console"
#: Sign-in checks the password against the broker: a wrong one must not keep the page waiting long.
SIGN_IN_TIMEOUT_S = 5.0
#: The alerts page lists conflicts needing action first.
STATUS_ORDER = (AlertStatus.ESCALATED, AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED, AlertStatus.RESOLVED)
#: At most this many release decisions on one page (the newest; a record id narrows them).
RELEASES_SHOWN = 500


@dataclass(frozen=True)
class SignedIn:
    """A signed-in user: the principal, the settings that connect as it, and a task force's feed as last read."""

    principal: str
    settings: HubSettings
    live: LiveFeed | None = None

    @property
    def unit_id(self) -> str:
        return self.principal.removeprefix(TASK_FORCE)

    @property
    def ori(self) -> str:
        return self.principal.removeprefix(AGENCY).upper()

    @property
    def is_auditor(self) -> bool:
        return self.principal.startswith(AUDITOR)

    @property
    def is_agency(self) -> bool:
        return self.principal.startswith(AGENCY)

    @property
    def is_task_force(self) -> bool:
        return self.principal.startswith(TASK_FORCE)

    @property
    def home(self) -> str:
        return "audit" if self.is_auditor else "alerts" if self.is_agency else "feed"


def sign_in(settings: HubSettings, principal: str, password: str) -> SignedIn:
    """Check ``principal``'s password with the broker (a SCRAM login) and return the user."""
    if not principal.startswith((TASK_FORCE, AGENCY, AUDITOR)) or not password:
        raise ConsoleSignInError(f"{principal or 'nobody'} cannot sign in here: the console serves task forces "
                                 "(tf-<unit>), agencies (agency-<ori>) and auditors (auditor-<name>)")
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


def by_status(alerts: list[DeconflictionAlert]) -> list[tuple[AlertStatus, list[DeconflictionAlert]]]:
    """The alerts grouped by status, those needing action first, newest change first within each."""
    ordered = sorted(alerts, key=lambda a: a.updated_at, reverse=True)
    return [(status, [a for a in ordered if a.status == status]) for status in STATUS_ORDER]


def create_app(settings: HubSettings, checkpoint_key: Path | None = None) -> Flask:
    """The console's WSGI app, reading the cluster ``settings`` name (their login is never used); the auditor's page
    checks the last signed checkpoint with ``checkpoint_key``, the hub's public key as this host holds it."""
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)  # sessions last as long as this process
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict")
    app.jinja_env.tests["allowed_for"] = lambda kind, status: status in ALLOWED[kind]  # the alerts stage's own rule
    users: dict[str, SignedIn] = {}
    lock = threading.Lock()

    def current() -> SignedIn | None:
        with lock:
            return users.get(session.get("token", ""))

    def feed_of(user: SignedIn) -> FeedView:
        assert user.live is not None  # every task force's sign-in opens its feed
        try:
            return user.live.view()
        except (KafkaUnavailableError, AuthenticationFailedError) as exc:
            abort(503, f"cannot read the feed: {exc}")

    def agency_feed_of(user: SignedIn) -> AgencyFeed:
        try:
            return read_agency_feed(user.settings, user.ori)
        except (KafkaUnavailableError, AuthenticationFailedError) as exc:
            abort(503, f"cannot read {user.ori}'s alerts and releases: {exc}")

    def alerts_of(user: SignedIn) -> tuple[list[DeconflictionAlert], int]:
        """A party's alerts (an agency's from its own topic, a task force's from its feed), and how many records the
        list was built from (the live page reloads when that moves)."""
        if user.is_agency:
            found = agency_feed_of(user)
            return list(found.alerts.values()), len(found.alerts) + len(found.releases)
        view = feed_of(user)
        return view.alerts, view.revisions

    def signed_in(allowed: Callable[[SignedIn], bool], refusal: str) -> SignedIn:
        """The signed-in user, if ``allowed`` to see the page (403 with ``refusal`` if not, 401 if nobody is)."""
        user = current()
        if user is None:
            abort(401)
        if not allowed(user):
            abort(403, refusal)
        return user

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
            if user.is_task_force:
                user = replace(user, live=LiveFeed(user.settings, user.unit_id))
        except (ConsoleSignInError, KafkaUnavailableError, FeedMissingError) as exc:
            return render_template("signin.html", error=exc.message, principal=principal), 401
        token = secrets.token_urlsafe(32)
        with lock:
            users[token] = user
        session["token"] = token
        return redirect(url_for(user.home))

    @app.post("/signout")
    def signout() -> Any:
        with lock:
            user = users.pop(session.pop("token", ""), None)
        if user is not None and user.live is not None:
            user.live.close()
        return redirect(url_for("signin_form"))

    def feed_page(template: str, **figures: Callable[[list[FeedRow]], Any]) -> Any:
        """A page of the signed-in unit's feed under the request's filters (sign-in first, if need be)."""
        user = current()
        if user is None:
            return redirect(url_for("signin_form"))
        if not user.is_task_force:
            abort(403, "only a task force has a feed: an agency reads its alerts and releases, an auditor the audit "
                       "log")
        view, filters = feed_of(user), _filters()
        rows = view.filtered(filters)
        return render_template(template, user=user, view=view, rows=rows, filters=filters, choices=view.choices(),
                               **{name: figure(rows) for name, figure in figures.items()})

    @app.get("/feed")
    def feed() -> Any:
        return feed_page("feed.html")

    @app.get("/feed/count")
    def feed_count() -> Any:
        user = signed_in(lambda u: u.is_task_force, "only a task force has a feed")
        return jsonify(count=feed_of(user).revisions)

    @app.get("/alerts")
    def alerts() -> Any:
        """Open, escalated, acknowledged and resolved conflicts with both parties' contacts: an agency's from its own
        topic, with the actions it may take; a task force's from its feed (its agencies act on them)."""
        user = current()
        if user is None:
            return redirect(url_for("signin_form"))
        if user.is_auditor:
            abort(403, "an auditor reads the audit log, not a party's alerts")
        listed, count = alerts_of(user)
        return render_template("alerts.html", user=user, groups=by_status(listed), count=count,
                               sent=request.args.get("sent"), kinds=list(AlertActionKind))

    @app.get("/alerts/count")
    def alerts_count() -> Any:
        """What the alerts page's script polls: it reloads when the count moves (an action adds a release too)."""
        return jsonify(count=alerts_of(signed_in(lambda u: not u.is_auditor, "an auditor has no alerts"))[1])

    @app.post("/alerts/<alert_id>")
    def act(alert_id: str) -> Any:
        """Acknowledge or resolve as the signed-in agency: the same audited action as `hub alerts ack|resolve`."""
        user = signed_in(lambda u: u.is_agency, "only a party's agency acts on an alert")
        action = request.form.get("action", "")
        kind = {"acknowledge": AlertActionKind.ACKNOWLEDGE, "resolve": AlertActionKind.RESOLVE}.get(action)
        actor = request.form.get("by", "").strip()
        if kind is None:
            abort(400, f"no action {action!r}: acknowledge or resolve")
        if not actor:
            abort(400, "name the officer acting (recorded in the alert and the audit log)")
        try:
            act_on_alert(user.settings, kind, alert_id, user.ori, actor, request.form.get("note", "").strip())
        except ValidationError as exc:
            abort(400, "; ".join(f"{field}: {reason}" for field, reason in problems_of(exc)))
        except HubError as exc:
            abort(503 if isinstance(exc, KafkaUnavailableError) else 403, exc.message)
        return redirect(url_for("alerts", sent=f"{kind.lower()} of {alert_id}"))

    @app.get("/releases")
    def releases() -> Any:
        """Who received the agency's records (28 CFR 23.20(g)), from its own topic: no auditor needed."""
        user = current()
        if user is None:
            return redirect(url_for("signin_form"))
        if not user.is_agency:
            abort(403, "only an agency reads the releases of its own records here (an auditor: the audit log)")
        found, record_id = agency_feed_of(user), request.args.get("record", "").strip()
        shown = found.released(record_id) if record_id else found.releases
        rows = [(release, decision) for release in shown for decision in release.per_unit()][:RELEASES_SHOWN]
        return render_template("releases.html", user=user, rows=rows, record_id=record_id, shown=RELEASES_SHOWN,
                               records=len(shown))

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
            view = audit_queries.auditor_view(user.settings, COMPONENT, record_id, agency)
            checkpoint = audit_queries.last_checkpoint(user.settings, COMPONENT, checkpoint_key)
        except (KafkaUnavailableError, AuthenticationFailedError) as exc:
            abort(503, f"cannot read the audit log: {exc}")
        return render_template("audit.html", user=user, check=view.check, record_id=record_id, who=view.who_saw,
                               agency=agency, released=view.releases, checkpoint=checkpoint, replays=view.replays)

    return app
