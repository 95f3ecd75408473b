"""The server uses libraries through their documented API only (static check).

websockets' private internals change between releases (17.0-17.3 leaked every closed
connection of a layer built on them), so nothing under ``server/src`` may reach a
private name: no attribute with a leading underscore on anything but the object's
own ``self``/``cls`` (except the documented ``namedtuple._replace`` and
``os._exit``), and websockets only through the modules and names its API reference
documents.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "wsfleet"

# Documented names with a leading underscore.
DOCUMENTED_UNDERSCORE = {"_replace", "_exit"}

# websockets' documented API (https://websockets.readthedocs.io/en/stable/reference/):
# the Sans-I/O layer, the asyncio client, HTTP/1.1 types, frames, exceptions, and
# the permessage-deflate extension.
WEBSOCKETS_API = {
    "websockets": {"connect"},
    "websockets.server": {"ServerProtocol"},
    "websockets.protocol": {"State"},
    "websockets.frames": {"Frame", "Opcode"},
    "websockets.http11": {"Request", "Response"},
    "websockets.asyncio.client": {"ClientConnection", "connect"},
    "websockets.exceptions": {"ConnectionClosed", "InvalidStatus"},
    "websockets.extensions.base": {"ServerExtensionFactory"},
    "websockets.extensions.permessage_deflate": {"ServerPerMessageDeflateFactory"},
}


def sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text())) for path in sorted(SOURCE.rglob("*.py"))]


def test_no_private_attribute_of_another_object_is_used() -> None:
    found = []
    for path, tree in sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in DOCUMENTED_UNDERSCORE:
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            found.append(f"{path.relative_to(SOURCE)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "private names of other objects:\n" + "\n".join(found)


def test_websockets_is_used_through_documented_names_only() -> None:
    found = []
    for path, tree in sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("websockets"):
                allowed = WEBSOCKETS_API.get(node.module or "", set())
                found += [
                    f"{path.relative_to(SOURCE)}:{node.lineno}: from {node.module} import {a.name}"
                    for a in node.names
                    if a.name not in allowed
                ]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "websockets"
                and node.attr not in WEBSOCKETS_API["websockets"]
            ):
                found.append(f"{path.relative_to(SOURCE)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "undocumented websockets names:\n" + "\n".join(found)
