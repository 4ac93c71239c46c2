"""Who may use the API and the dashboard: users with a role, their API tokens, and their
signed-in dashboard sessions.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second
recommended profile). Tokens and session secrets are 256 random bits; only their SHA-256
is stored, so a copy of the database lets nobody in, and a request finds its token with
one indexed lookup. Every check answers the same way for an unknown user, a wrong
password and a disabled user, so that a caller learns nothing about which it was.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ApiToken, Role, User, WebSession

TOKEN_PREFIX = "dn_"
"""Every API token starts so, which makes a leaked one easy to find in a log or a repo."""
ROLE_RANK = {Role.VIEWER: 0, Role.REVIEWER: 1, Role.ADMIN: 2}
NAME_PATTERN = r"^[A-Za-z0-9._@-]{1,64}$"
MIN_PASSWORD_LENGTH = 12

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
"""Verified against when the user is unknown, so that it takes as long as a real check."""


class AccountRefused(ValueError):
    """The account change cannot be made; the message says why."""


@dataclass(frozen=True)
class Principal:
    """The user a request acts for."""

    user_id: int
    name: str
    role: Role

    def may(self, role: Role) -> bool:
        """Whether this user holds ``role`` or a higher one."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _principal(user: User) -> Principal:
    return Principal(user.id, user.name, user.role)


def _active_user(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name, User.disabled_at.is_(None)))


def add_user(session: Session, name: str, role: Role, password: str | None, now: datetime) -> User:
    """A new user; without a password the user can only use tokens."""
    if not re.match(NAME_PATTERN, name):
        raise AccountRefused(
            f"user name {name!r}: use 1-64 letters, digits and . _ @ - (no spaces)"
        )
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise AccountRefused(f"user {name!r} exists already")
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise AccountRefused(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    user = User(
        name=name,
        role=role,
        password_hash=_hasher.hash(password) if password is not None else None,
        created_at=now,
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, name: str, password: str) -> None:
    """Replaces a user's password and signs out every session of theirs."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise AccountRefused(f"no user {name!r}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountRefused(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
    user.password_hash = _hasher.hash(password)
    for web in session.scalars(select(WebSession).where(WebSession.user_id == user.id)):
        session.delete(web)


def disable_user(session: Session, name: str, now: datetime) -> None:
    """The user can no longer sign in; their tokens and sessions stop working at once."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise AccountRefused(f"no user {name!r}")
    user.disabled_at = now
    for web in session.scalars(select(WebSession).where(WebSession.user_id == user.id)):
        session.delete(web)


def list_users(session: Session) -> list[dict[str, object]]:
    """Every user with their role, state and number of live tokens; never a hash."""
    rows: list[dict[str, object]] = []
    for user in session.scalars(select(User).order_by(User.name)):
        tokens = session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        ).all()
        rows.append(
            {
                "name": user.name,
                "role": user.role.value,
                "password": user.password_hash is not None,
                "created": user.created_at.isoformat(),
                "disabled": user.disabled_at.isoformat() if user.disabled_at else None,
                "tokens": len(tokens),
            }
        )
    return rows


def create_token(session: Session, name: str, label: str, now: datetime) -> tuple[int, str]:
    """A new API token for user ``name``: its id and the token itself, which is shown
    once and never stored."""
    user = _active_user(session, name)
    if user is None:
        raise AccountRefused(f"no active user {name!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=_digest(token), label=label, created_at=now)
    session.add(row)
    session.flush()
    return row.id, token


def revoke_token(session: Session, token_id: int, now: datetime) -> None:
    """The token stops working at once."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise AccountRefused(f"no token {token_id}")
    row.revoked_at = row.revoked_at or now


def principal_for_token(session: Session, token: str, now: datetime) -> Principal | None:
    """The user a bearer token acts for, or None for an unknown, revoked or disabled one."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(token)))
    if row is None or row.revoked_at is not None or row.user.disabled_at is not None:
        return None
    row.last_used_at = now
    return _principal(row.user)


def check_password(session: Session, name: str, password: str) -> Principal | None:
    """The user, when ``password`` is theirs; None otherwise (whatever the reason)."""
    user = _active_user(session, name)
    stored = user.password_hash if user is not None else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or stored is None:
        return None
    if _hasher.check_needs_rehash(stored):
        user.password_hash = _hasher.hash(password)
    return _principal(user)


def open_session(
    session: Session, principal: Principal, now: datetime, lifetime: timedelta
) -> tuple[str, str]:
    """A new dashboard session: the secret for the cookie and the CSRF token."""
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            user_id=principal.user_id,
            secret_hash=_digest(secret),
            csrf_token=csrf,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return secret, csrf


def session_principal(session: Session, secret: str, now: datetime) -> tuple[Principal, str] | None:
    """The signed-in user and the session's CSRF token, or None for an unknown or
    expired session or a disabled user."""
    row = session.scalar(select(WebSession).where(WebSession.secret_hash == _digest(secret)))
    if row is None or row.expires_at <= now or row.user.disabled_at is not None:
        return None
    return _principal(row.user), row.csrf_token


def close_session(session: Session, secret: str) -> None:
    """Signs the session out (nothing happens for an unknown one)."""
    row = session.scalar(select(WebSession).where(WebSession.secret_hash == _digest(secret)))
    if row is not None:
        session.delete(row)
