"""Handshake and publish authorization: JWT (HS256), Origin allow-list, API key.

PROTOCOL.md: a missing, malformed, badly signed or expired token (or one for another
audience or issuer, when those are configured) is an HTTP 401; a connection is closed
with 4001 when its token expires (:mod:`wsfleet.session`);
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
    expires_at: float | None = None  # the token's `exp`, seconds since the epoch

    def may_use(self, room: str) -> bool:
        if self.room_patterns is None:
            return True
        return any(fnmatch.fnmatchcase(room, pattern) for pattern in self.room_patterns)


def verify_token(
    token: str | None,
    secret: str,
    *,
    audience: str | None = None,
    issuer: str | None = None,
) -> Identity:
    """Check an HS256 token with required ``sub`` and ``exp``, or raise :class:`AuthError`.

    With ``audience`` or ``issuer`` configured, the token must carry a matching
    ``aud`` or ``iss``; without, those claims are not checked.
    """
    if not token:
        raise AuthError("missing token")
    required = ["exp", "sub"]
    if audience is not None:
        required.append("aud")
    if issuer is not None:
        required.append("iss")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=audience,
            issuer=issuer,
            options={"require": required, "verify_aud": audience is not None},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {type(exc).__name__}") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("invalid token: sub must be a non-empty string")
    expires = claims.get("exp")
    expires_at = float(expires) if isinstance(expires, int | float) else None
    rooms = claims.get("rooms")
    if rooms is None:
        return Identity(subject, None, expires_at)
    if not isinstance(rooms, list) or not all(isinstance(item, str) for item in rooms):
        raise AuthError("invalid token: rooms must be a list of strings")
    return Identity(subject, tuple(rooms), expires_at)


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
