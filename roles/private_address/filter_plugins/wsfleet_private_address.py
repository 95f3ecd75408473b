"""The one rule that picks a host's private address, for every wsfleet role.

Every role binds to, dials or firewalls a host at its private address; they all
read it through this filter so that they agree, and so that no role ever falls
back to a public address (issue 15, item 1). The rule:
- wsfleet_private_address, when the inventory sets it, must be a private
  address (RFC 1918, 100.64.0.0/10, or an IPv6 unique local address fc00::/7)
  unless wsfleet_private_address_allow_public is true;
- otherwise the address of the host's default IPv4 route, when it is private;
  a public default route is an error (never a silent fallback to the public
  address, and no guess among the host's other interfaces);
- a host without a default route (only on an internal network) uses its one
  private IPv4 address; none, or several, is an error.
Every error names wsfleet_private_address and the host.
Pure logic with unit tests (tests/test_private_address.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network) for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
PRIVATE_RANGES_TEXT = "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10 or fc00::/7"


def is_private_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for the ranges a private network uses (not loopback, link-local or public)."""
    return any(address.version == network.version and address in network for network in PRIVATE_NETWORKS)


def _as_bool(value: Any, host: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0", "", "none"):
        return False
    raise AnsibleFilterError(f"{host}: wsfleet_private_address_allow_public needs true or false, got {value!r}")


def _parse(value: Any, host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = str(value).strip().strip("[]")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise AnsibleFilterError(
            f"{host}: wsfleet_private_address must be one IPv4 or IPv6 address (no prefix length, no name), got {value!r}"
        ) from None
    if address.is_unspecified or address.is_multicast:
        raise AnsibleFilterError(
            f"{host}: wsfleet_private_address {text} is not a host address: set this host's own address on the private network"
        )
    return address


def _private_candidates(addresses: Any) -> list[str]:
    found: list[str] = []
    for value in addresses or []:
        try:
            address = ipaddress.ip_address(str(value).strip())
        except ValueError:
            continue
        if is_private_address(address) and str(address) not in found:
            found.append(str(address))
    return found


def pick_private_address(
    explicit: Any, default_ipv4: Any, all_ipv4: Any = (), allow_public: Any = False, host: str = "this host"
) -> str:
    """The host's private address from the inventory value, else from the facts.

    explicit: wsfleet_private_address (None or "" when unset).
    default_ipv4: the address of the default IPv4 route from the facts (None when there is none).
    all_ipv4: every IPv4 address of the host from the facts.
    allow_public: wsfleet_private_address_allow_public, the operator's override for an
      explicit address outside the private ranges.
    """
    if explicit not in (None, ""):
        address = _parse(explicit, host)
        if not is_private_address(address) and not _as_bool(allow_public, host):
            raise AnsibleFilterError(
                f"{host}: wsfleet_private_address {address} is not a private address ({PRIVATE_RANGES_TEXT}). "
                "Set wsfleet_private_address to the host's address on the private network, or set "
                "wsfleet_private_address_allow_public: true if this address really is only reachable privately"
            )
        return str(address)
    if default_ipv4 not in (None, ""):
        try:
            detected = ipaddress.ip_address(str(default_ipv4).strip())
        except ValueError:
            raise AnsibleFilterError(f"{host}: cannot read the default IPv4 address {default_ipv4!r} from the facts") from None
        if is_private_address(detected):
            return str(detected)
        others = _private_candidates(all_ipv4)
        raise AnsibleFilterError(
            f"{host}: no private address: wsfleet_private_address is not set and the default IPv4 address {detected} "
            f"is not private ({PRIVATE_RANGES_TEXT}); the services would listen on, and be dialled at, a public "
            "address. Set wsfleet_private_address for this host to its address on the private network"
            + (f" (private addresses found on it: {', '.join(others)})" if others else "")
        )
    # No default route (a host only on an internal network): its one private address.
    candidates = _private_candidates(all_ipv4)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise AnsibleFilterError(
            f"{host}: no private address: wsfleet_private_address is not set and the facts show neither a default "
            "IPv4 route nor a private IPv4 address (facts not gathered?). Set wsfleet_private_address for this host"
        )
    raise AnsibleFilterError(
        f"{host}: wsfleet_private_address is not set and the host has no default route but several private "
        f"addresses ({', '.join(candidates)}): set wsfleet_private_address to the one the other hosts reach it at"
    )


def wsfleet_private_address(host_vars: Mapping[str, Any], host: str = "this host") -> str:
    """The private address of a host from its variables: `hostvars[name] | wsfleet_private_address(name)`."""
    if not isinstance(host_vars, Mapping):
        raise AnsibleFilterError(
            f"wsfleet_private_address: expected a host's variables (hostvars[name]), got {type(host_vars).__name__}"
        )
    facts = host_vars.get("ansible_facts") or {}
    if not isinstance(facts, Mapping):
        facts = {}
    return pick_private_address(
        host_vars.get("wsfleet_private_address"),
        (facts.get("default_ipv4") or {}).get("address"),
        facts.get("all_ipv4_addresses") or [],
        host_vars.get("wsfleet_private_address_allow_public", False),
        host,
    )


def wsfleet_private_addresses(hostvars: Mapping[str, Any], hosts: Any) -> list[str]:
    """The private addresses of several hosts: `hostvars | wsfleet_private_addresses(groups['redis'])`."""
    if isinstance(hosts, (str, bytes)) or not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError(f"wsfleet_private_addresses: expected a list of inventory host names, got {hosts!r}")
    return [wsfleet_private_address(hostvars[str(host)], str(host)) for host in hosts]


class FilterModule:
    """wsfleet_private_address(es): hosts' validated private addresses from their variables."""

    def filters(self) -> dict[str, Any]:
        return {"wsfleet_private_address": wsfleet_private_address, "wsfleet_private_addresses": wsfleet_private_addresses}
