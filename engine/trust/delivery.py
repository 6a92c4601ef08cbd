"""Notification delivery: send the outbox (e-mail over SMTP, 企业微信/钉钉 group robots and other webhooks) through
Apprise, claimed under row locks so many hosts can run it, retried with backoff, failures kept for the admin.
The runner (claim, send outside any transaction, settle; each step its own unit of work) is an entry point:
api/background.py deliver_pending."""
from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from storage.models import NotificationDelivery

log = logging.getLogger("itemgate.delivery")

MAX_ATTEMPTS = 6
# A claim whose sender died (no result within this time) is taken up again.
STALE_CLAIM = timedelta(minutes=5)
# Who settles a delivery, for the debug log.
RUNNER = f"{socket.gethostname()}:{os.getpid()}"


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, 4 min, 8 min …, at most an hour."""
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


@dataclass(frozen=True)
class SmtpSettings:
    host: str | None = None
    port: int = 25
    username: str | None = None
    password: str | None = None
    sender: str = "itemgate@localhost"
    # insecure (plain SMTP) | starttls | ssl
    mode: str = "starttls"

    def url_for(self, address: str) -> str | None:
        """The Apprise mailto URL sending one message to `address`, or None without an SMTP host."""
        if not self.host:
            return None
        auth = ""
        if self.username:
            auth = quote(self.username, safe="") + (":" + quote(self.password or "", safe="")) + "@"
        scheme = "mailtos" if self.mode == "ssl" else "mailto"
        query = {"from": self.sender, "to": address, "smtp": self.host}
        if self.mode != "ssl":
            query["mode"] = "insecure" if self.mode == "insecure" else "starttls"
        return f"{scheme}://{auth}{self.host}:{self.port}?{urlencode(query)}"


def valid_target(kind: str, target: str) -> bool:
    """Whether a channel's target can be used: an e-mail address, or a URL Apprise knows (wecombot://KEY,
    dingtalk://TOKEN, the 企业微信 robot's own https webhook URL, json://host/path …)."""
    target = target.strip()
    if not target or len(target) > 500:
        return False
    if kind == "email":
        local, _, domain = target.partition("@")
        return bool(local) and "." in domain and " " not in target
    import apprise

    return bool(apprise.Apprise().add(target))


def mask(target: str) -> str:
    """A target as the admin sees it: the robot's key or token is a secret, so only its first characters."""
    if "@" in target and "://" not in target:
        return target
    head, sep, rest = target.partition("://")
    if not sep:
        return target[:12] + "…"
    return f"{head}://{rest[:14]}…" if len(rest) > 14 else target


Sender = Callable[[NotificationDelivery], None]


def apprise_sender(smtp: SmtpSettings) -> Sender:
    """Send one delivery through Apprise; raise with Apprise's own log lines when it fails."""
    import apprise

    def send(delivery: NotificationDelivery) -> None:
        url = smtp.url_for(delivery.target) if delivery.kind == "email" else delivery.target
        if url is None:
            raise RuntimeError("no SMTP server is configured (ITEMGATE_SMTP_HOST)")
        sender = apprise.Apprise()
        if not sender.add(url):
            raise RuntimeError(f"not a usable {delivery.kind} target")
        with apprise.LogCapture(level=logging.WARNING) as logs:
            ok = bool(sender.notify(title=delivery.title, body=delivery.body))
        if not ok:
            text = logs.getvalue().strip().splitlines()
            raise RuntimeError(text[-1] if text else "the service refused the message")

    return send


def _claimable(now: datetime) -> Any:
    return or_((NotificationDelivery.status == "pending") & (NotificationDelivery.next_attempt_at <= now),
               (NotificationDelivery.status == "sending") & (NotificationDelivery.claimed_at < now - STALE_CLAIM))


def claim_next(session: Session, now: datetime) -> NotificationDelivery | None:
    """Take one due delivery (flushes only; the runner commits the claim before sending): locked and skipped by
    other hosts on PostgreSQL; the guarded UPDATE decides on SQLite (and anywhere a second runner read the same
    row). None when nothing is due or another runner took it first."""
    query = select(NotificationDelivery).where(_claimable(now)).order_by(NotificationDelivery.next_attempt_at,
                                                                         NotificationDelivery.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = session.scalars(query).first()
    if row is None:
        return None
    result = session.execute(update(NotificationDelivery).where(
        NotificationDelivery.id == row.id, _claimable(now)).values(
        status="sending", claimed_at=now, attempts=NotificationDelivery.attempts + 1)
        .execution_options(synchronize_session=False))
    if not getattr(result, "rowcount", 0):
        return None
    session.refresh(row)
    return row


def send_claimed(row: NotificationDelivery, send: Sender) -> str | None:
    """Send one claimed delivery, outside any transaction; the failure's text, or None when it went out."""
    try:
        send(row)
    except Exception as exc:  # any failure of the far side is recorded and retried, never raised
        return f"{type(exc).__name__}: {exc}"[:2000]
    return None


def settle(session: Session, row: NotificationDelivery, error: str | None, at: datetime) -> str:
    """Record how a claimed delivery went (flushes only): sent, pending again after a backoff, or failed for good
    after MAX_ATTEMPTS. Only the claim that is still ours is settled (a runner given up on as stale cannot
    write). Returns the outcome: sent, retry or failed."""
    if error is None:
        values: dict[str, Any] = {"status": "sent", "sent_at": at, "last_error": None}
        outcome = "sent"
    elif row.attempts >= MAX_ATTEMPTS:
        values = {"status": "failed", "last_error": error}
        outcome = "failed"
        log.warning("notification delivery %s failed for good: %s", row.id, error)
    else:
        values = {"status": "pending", "last_error": error, "next_attempt_at": at + backoff(row.attempts)}
        outcome = "retry"
    session.execute(update(NotificationDelivery).where(
        NotificationDelivery.id == row.id, NotificationDelivery.status == "sending",
        NotificationDelivery.claimed_at == row.claimed_at).values(**values)
        .execution_options(synchronize_session=False))
    log.debug("delivery %s by %s: %s", row.id, RUNNER, values["status"])
    return outcome


def retry(session: Session, delivery_id: int, now: datetime) -> bool:
    """An admin sends a failed delivery again (attempts start afresh)."""
    result = session.execute(update(NotificationDelivery).where(
        NotificationDelivery.id == delivery_id, NotificationDelivery.status == "failed").values(
        status="pending", attempts=0, next_attempt_at=now).execution_options(synchronize_session=False))
    return bool(getattr(result, "rowcount", 0))


def outbox_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(NotificationDelivery.status, func.count()).group_by(NotificationDelivery.status))
    counts = {"pending": 0, "sending": 0, "sent": 0, "failed": 0}
    counts.update({status: int(n) for status, n in rows})
    return counts
