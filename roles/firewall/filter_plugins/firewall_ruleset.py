"""Turn the firewall's services and sources into what the nftables template writes.

The template stays a plain rendering; the decisions live here, with unit tests
(tests/test_firewall_ruleset.py):
- every source list is split into IPv4 and IPv6 networks, overlapping or
  duplicate entries merged (nftables refuses overlapping intervals in a set);
  a malformed source is an error naming the variable it came from;
- a service is a rule only where it applies to this host, with at least one
  port and one source: an empty group (no monitoring hosts) opens nothing;
- ports are checked (1-65535), protocols are tcp or udp.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

SET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(values: Any, origin: str) -> list[Network]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise AnsibleFilterError(f"firewall: {origin} must be a list of addresses or networks, got {values!r}")
    networks: list[Network] = []
    for value in values:
        text = str(value).strip().strip("[]") if value is not None else ""
        try:
            networks.append(ipaddress.ip_network(text, strict=True))
        except ValueError as error:
            raise AnsibleFilterError(
                f"firewall: {origin}: {value!r} is not an address or a network (e.g. 10.0.0.5, 10.0.0.0/24, fd00::/8): {error}"
            ) from None
    return networks


def _text(network: Network) -> str:
    """A single address without its /32 or /128, as nft lists it."""
    return str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)


def _split(networks: list[Network]) -> dict[str, list[str]]:
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return {
        "ipv4": [_text(n) for n in ipaddress.collapse_addresses(v4)],
        "ipv6": [_text(n) for n in ipaddress.collapse_addresses(v6)],
    }


def _ports(values: Any, origin: str) -> list[int]:
    if not isinstance(values, (list, tuple)):
        values = [values]
    ports: list[int] = []
    for value in values:
        if isinstance(value, bool):
            raise AnsibleFilterError(f"firewall: {origin}: a port must be a number, got the boolean {value!r}")
        try:
            port = int(str(value).strip())
        except ValueError:
            raise AnsibleFilterError(f"firewall: {origin}: a port must be a number, got {value!r}") from None
        if not 1 <= port <= 65535:
            raise AnsibleFilterError(f"firewall: {origin}: port {port} is not between 1 and 65535")
        if port not in ports:
            ports.append(port)
    return sorted(ports)


def _applies(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise AnsibleFilterError(f"firewall: {name}: applies needs true or false, got {value!r}")


def firewall_ruleset(
    services: list[Any],
    sources: Mapping[str, Any],
    extra_rules: list[Any] | None = None,
    origins: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return {sets: {name: {ipv4: [...], ipv6: [...]}}, rules: [...]}.

    services: [{name, ports, sources: [set names], protocol (tcp), applies (bool), port_offset (0)}],
      the role's own; port_offset is added to every port (Redis Cluster's bus: port + 10000).
    sources: {set name: [addresses or networks]}, e.g. {"loadbalancers": ["10.0.0.10"]}.
    extra_rules: firewall_extra_rules, [{name, ports, sources: [addresses], protocol}].
    origins: {set name: the variable it comes from}, for error messages.
    Each rule: {name, protocol, ports, family ("ip" or "ip6"), set}. Rules that name an
    empty set, or a set without addresses of one family, are left out; so are sets no
    rule uses.
    """
    sets: dict[str, dict[str, list[str]]] = {}
    for name, values in sources.items():
        if not SET_NAME.match(str(name)):
            raise AnsibleFilterError(f"firewall: {name!r} is not a usable set name (lower-case letters, digits, _)")
        origin = (origins or {}).get(str(name), f"the sources of {name}")
        sets[str(name)] = _split(_networks(values, origin))

    wanted: list[dict[str, Any]] = []
    for service in services:
        if not isinstance(service, Mapping) or "name" not in service:
            raise AnsibleFilterError(f"firewall: a service needs a name, ports and sources, got {service!r}")
        if not _applies(service.get("applies", True), str(service["name"])):
            continue
        offset = int(service.get("port_offset", 0))
        ports = [port + offset for port in _ports(service["ports"], str(service["name"]))]
        wanted.append(
            {"name": service["name"], "protocol": service.get("protocol", "tcp"), "ports": ports, "sets": service["sources"]}
        )
    for index, rule in enumerate(extra_rules or []):
        if not isinstance(rule, Mapping) or not rule.get("name") or "ports" not in rule or "sources" not in rule:
            raise AnsibleFilterError(f"firewall: firewall_extra_rules[{index}] needs a name, ports and sources, got {rule!r}")
        set_name = f"extra_{index}"
        sets[set_name] = _split(_networks(rule["sources"], f"firewall_extra_rules[{index}] ({rule['name']}) sources"))
        wanted.append({"name": rule["name"], "protocol": rule.get("protocol", "tcp"), "ports": rule["ports"], "sets": [set_name]})

    rules: list[dict[str, Any]] = []
    for rule in wanted:
        protocol = str(rule["protocol"]).lower()
        if protocol not in ("tcp", "udp"):
            raise AnsibleFilterError(f"firewall: {rule['name']}: protocol must be tcp or udp, got {rule['protocol']!r}")
        ports = _ports(rule["ports"], str(rule["name"]))
        if not ports:
            continue
        for set_name in rule["sets"]:
            if set_name not in sets:
                raise AnsibleFilterError(f"firewall: {rule['name']}: unknown source set {set_name!r}")
            for family, key in (("ip", "ipv4"), ("ip6", "ipv6")):
                if sets[set_name][key]:
                    rules.append(
                        {"name": str(rule["name"]), "protocol": protocol, "ports": ports, "family": family, "set": set_name}
                    )
    used = {rule["set"] for rule in rules}
    return {"sets": {name: families for name, families in sets.items() if name in used}, "rules": rules}


class FilterModule:
    """firewall_ruleset: services and sources to nftables sets and rules."""

    def filters(self) -> dict[str, Any]:
        return {"firewall_ruleset": firewall_ruleset}
