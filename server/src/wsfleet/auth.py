"""Handshake and publish authorization: JWT (HS256), Origin allow-list, API key.

PROTOCOL.md: a missing, malformed, badly signed or expired token is an HTTP 401;
an Origin that is present but not allowed is a 403. The token's optional ``rooms``
claim (shell patterns) limits which rooms the connection may join and publish to.
"""

from __future__ import annotations

import fnmatch
import hmac
from dataclasses import dataclass

import jwt

__all__ = ["AuthError", "Identity", "check_api_key", "origin_allowed", "verify_token"]


class AuthError(Exception):
    """The token is not acceptable; the message says why (never the token itself)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is, per its token: ``sub`` and the rooms it may use."""

    subject: str
    room_patterns: tuple[str, ...] | None = None  # None: every room

    def may_use(self, room: str) -> bool:
        if self.room_patterns is None:
            return True
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.room_patterns)


def verify_token(token: str | None, secret: str) -> Identity:
    """Check an HS256 token with required ``sub`` and ``exp``, or raise :class:`AuthError`."""
    if not token:
        raise AuthError("missing token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {type(exc).__name__}") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("invalid token: sub must be a non-empty string")
    rooms = claims.get("rooms")
    if rooms is None:
        return Identity(subject)
    if not isinstance(rooms, list) or not all(isinstance(item, str) for item in rooms):
        raise AuthError("invalid token: rooms must be a list of strings")
    return Identity(subject, tuple(rooms))


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """True when there is no allow-list, no Origin header, or the Origin is listed."""
    if not allowed or origin is None:
        return True
    return origin.rstrip("/") in allowed


def check_api_key(authorization: str | None, api_key: str) -> bool:
    """True when the header is ``Bearer <api key>``; compared in constant time."""
    if not authorization:
        return False
    scheme, _, presented = authorization.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), api_key.encode())
