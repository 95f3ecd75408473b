"""The websockets version the connection layer is built for, checked at start.

:mod:`wsfleet.connection` replaces parts of websockets' asyncio connection that are
not public API (its constructor, the frame queue, the parser it re-creates), so a
release that changes them breaks the server in ways no type checker sees (websockets
17.0 to 17.3 leaked every closed connection). ``wsfleet serve`` refuses to start on
any other minor version, before importing the connection layer, and says what to
install. The pin lives in ``server/constraints.txt``.
"""

from __future__ import annotations

from importlib import metadata

__all__ = ["WEBSOCKETS_BUILT_FOR", "IncompatibleDependency", "check_websockets"]

# The websockets minor version (any patch release of it) the connection layer is built for.
WEBSOCKETS_BUILT_FOR = "17.4"


class IncompatibleDependency(RuntimeError):
    """An installed library is a version the server was not built for."""


def check_websockets(installed: str | None = None) -> None:
    """Raise :class:`IncompatibleDependency` unless websockets is 17.4 or a 17.4.x."""
    if installed is None:
        try:
            installed = metadata.version("websockets")
        except metadata.PackageNotFoundError:
            installed = "none"
    if installed == WEBSOCKETS_BUILT_FOR or installed.startswith(WEBSOCKETS_BUILT_FOR + "."):
        return
    raise IncompatibleDependency(
        f"websockets {installed} is installed, but this server is built for websockets "
        f"{WEBSOCKETS_BUILT_FOR} (it relies on that version's internals); install the "
        "pinned versions: pip install -c server/constraints.txt 'wsfleet[fast]'"
    )
