"""Work out the load balancer's backends from the inventory, and which are down.

The rules live here rather than in Jinja because they decide where traffic goes
and deserve unit tests (molecule/nginx_lb/tests/test_upstream_plan.py):
- every host of the WebSocket group contributes one backend per server instance:
  ws_server_ports (explicit list, which the ws_server role also publishes) or
  ws_server_port_base .. + ws_server_instances - 1, where an unset instance count
  is the host's CPU count as in the ws_server role; on wsfleet_private_address or
  else the address of its default IPv4 route;
- an explicit nginx_lb_upstream_servers list replaces that discovery;
- a backend is down when nginx_lb_down_servers names it (inventory, permanent) or
  when a drain marked it (runtime state kept on the load balancer); one drain may
  return some backends and drain others (a rolling restart's step, one reload);
- a selector is "ADDRESS:PORT", "HOST:PORT" (inventory name), "ADDRESS" or "HOST"
  (every port of it), "[IPV6]:PORT"; a selector that matches nothing is an error,
  so a typo never silently leaves a backend in service.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleFilterError


def _as_int(value: Any, what: str, low: int = 1, high: int = 65535) -> int:
    if isinstance(value, bool):
        raise AnsibleFilterError(f"nginx_lb: {what} needs a number, got the boolean {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise AnsibleFilterError(f"nginx_lb: {what} needs a number, got {value!r}") from None
    if not low <= number <= high:
        raise AnsibleFilterError(f"nginx_lb: {what} must be between {low} and {high}, got {number}")
    return number


def _as_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise AnsibleFilterError(f"nginx_lb: {what} needs true or false, got {value!r}")


def _key(address: str, port: int) -> str:
    """nginx's spelling of ADDRESS:PORT (IPv6 addresses in brackets)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _parse_selector(selector: Any) -> tuple[str, int | None]:
    """'10.0.0.5:8000' -> ('10.0.0.5', 8000); 'ws-1' -> ('ws-1', None); '[::1]:80' -> ('::1', 80)."""
    text = str(selector).strip()
    if not text:
        raise AnsibleFilterError("nginx_lb: an empty backend selector")
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        if not rest:
            return address, None
        if not rest.startswith(":"):
            raise AnsibleFilterError(f"nginx_lb: cannot read the backend selector {text!r}")
        return address, _as_int(rest[1:], f"the port in {text!r}")
    if text.count(":") == 1:
        name, port = text.split(":")
        return name, _as_int(port, f"the port in {text!r}")
    return text, None  # a name, an IPv4 address or a bare IPv6 address


def _matches(server: dict[str, Any], selector: Any) -> bool:
    name, port = _parse_selector(selector)
    if name not in (server["address"], server["host"]):
        return False
    return port is None or port == server["port"]


def _select(servers: list[dict[str, Any]], selectors: list[Any], origin: str) -> list[str]:
    """Keys of the servers the selectors name; an unmatched selector is an error."""
    keys: list[str] = []
    for selector in selectors:
        found = [server["key"] for server in servers if _matches(server, selector)]
        if not found:
            known = ", ".join(f"{s['key']} ({s['host']})" if s["host"] else s["key"] for s in servers)
            raise AnsibleFilterError(f"nginx_lb: {origin}: no backend matches {selector!r}; the backends are: {known}")
        keys.extend(key for key in found if key not in keys)
    return keys


def _host_ports(host: dict[str, Any], defaults: dict[str, Any]) -> list[int]:
    name = host["name"]
    if host.get("ports") not in (None, ""):
        ports = host["ports"]
        if not isinstance(ports, (list, tuple)) or not ports:
            raise AnsibleFilterError(f"nginx_lb: ws_server_ports of {name} must be a non-empty list of ports, got {ports!r}")
        return [_as_int(port, f"ws_server_ports of {name}") for port in ports]
    base = host.get("port_base")
    base = _as_int(defaults["port_base"] if base in (None, "") else base, f"ws_server_port_base of {name}")
    count = host.get("instances")
    if count in (None, ""):
        count = host.get("vcpus")  # the ws_server role's own default: one instance per CPU
    count = _as_int(defaults["instances"] if count in (None, "") else count, f"ws_server_instances of {name}", 1, 1024)
    if base + count - 1 > 65535:
        raise AnsibleFilterError(
            f"nginx_lb: {name}: ws_server_port_base {base} + ws_server_instances {count} runs past port 65535"
        )
    return list(range(base, base + count))


def _option(entry: dict[str, Any], name: str, default: Any) -> Any:
    value = entry.get(name)
    return default if value in (None, "") else value


def _server(address: str, port: int, host: str, entry: dict[str, Any], defaults: dict[str, Any], backup: bool) -> dict[str, Any]:
    what = f"backend {_key(address, port)}"
    return {
        "key": _key(address, port),
        "address": address,
        "port": port,
        "host": host,
        "weight": _as_int(_option(entry, "weight", 1), f"weight of {what}", 1, 1000),
        "max_fails": _as_int(_option(entry, "max_fails", defaults["max_fails"]), f"max_fails of {what}", 0, 1000),
        "fail_timeout": str(_option(entry, "fail_timeout", defaults["fail_timeout"])).strip(),
        "backup": backup or _as_bool(_option(entry, "backup", False), f"backup of {what}"),
        "down": False,
        "down_reason": "",
    }


def _explicit(entry: Any, defaults: dict[str, Any], backup: bool, origin: str) -> dict[str, Any]:
    if not isinstance(entry, dict) or not entry.get("address") or entry.get("port") in (None, ""):
        raise AnsibleFilterError(f"nginx_lb: every entry of {origin} needs an address and a port, got {entry!r}")
    address = str(entry["address"]).strip().strip("[]")
    port = _as_int(entry["port"], f"the port of {address} in {origin}")
    return _server(address, port, str(_option(entry, "host", "")), entry, defaults, backup)


def nginx_lb_upstream_plan(
    ws_hosts: list[dict[str, Any]],
    explicit: list[Any],
    backups: list[Any],
    defaults: dict[str, Any],
    static_down: list[Any],
    drained: list[Any],
    drain_request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return {servers, drained, notes}.

    ws_hosts: one dict per host of the WebSocket group: name, private_address,
      fact_address, ports, port_base, instances, vcpus (None where the host has none).
    explicit, backups: nginx_lb_upstream_servers and nginx_lb_backup_servers.
    defaults: port_base, instances, max_fails, fail_timeout.
    static_down: nginx_lb_down_servers (selectors).
    drained: keys marked down by earlier drains (state kept on the load balancer).
    drain_request: {"backends": [selectors], "state": "down"|"up", "return": [selectors]}
      when draining; "return" puts backends back in the same step (before "backends" go down).
    servers: what the upstream block lists, each with key, address, port, host,
      weight, max_fails, fail_timeout, backup, down, down_reason.
    drained: the keys to keep as drained after this run.
    """
    notes: list[str] = []
    servers: list[dict[str, Any]] = []
    if explicit:
        servers = [_explicit(entry, defaults, False, "nginx_lb_upstream_servers") for entry in explicit]
    else:
        for host in ws_hosts:
            address = host.get("private_address") or host.get("fact_address")
            if not address:
                raise AnsibleFilterError(
                    f"nginx_lb: WebSocket host {host['name']} has no address: set wsfleet_private_address for it, "
                    "or let the play gather its facts (the address of its default IPv4 route is used)"
                )
            for port in _host_ports(host, defaults):
                servers.append(_server(str(address).strip(), port, host["name"], {}, defaults, False))
    servers += [_explicit(entry, defaults, True, "nginx_lb_backup_servers") for entry in backups]

    if not [server for server in servers if not server["backup"]]:
        raise AnsibleFilterError(
            "nginx_lb: no backends: the WebSocket group (nginx_lb_upstream_group) has no hosts and "
            "nginx_lb_upstream_servers is empty"
        )
    seen: set[str] = set()
    for server in servers:
        if server["key"] in seen:
            raise AnsibleFilterError(f"nginx_lb: backend {server['key']} is listed twice")
        seen.add(server["key"])

    static_keys = _select(servers, list(static_down), "nginx_lb_down_servers")
    drained_keys = [str(key) for key in drained if str(key) in seen]
    notes += [f"{key}: was drained but is no longer a backend, forgotten" for key in drained if str(key) not in seen]

    if drain_request:
        state = drain_request.get("state")
        if state not in ("down", "up"):
            raise AnsibleFilterError(f"nginx_lb: nginx_lb_drain_state must be down or up, got {state!r}")
        returned = _select(servers, list(drain_request.get("return") or []), "nginx_lb_drain_return_backends")
        drained_keys = [key for key in drained_keys if key not in returned]
        notes += [f"{key}: stays down, nginx_lb_down_servers lists it" for key in returned if key in static_keys]
        requested = _select(servers, list(drain_request.get("backends") or []), "nginx_lb_drain_backends")
        if state == "down":
            drained_keys += [key for key in requested if key not in drained_keys]
            remaining = [s for s in servers if not s["backup"] and s["key"] not in drained_keys and s["key"] not in static_keys]
            if requested and not remaining:
                raise AnsibleFilterError(
                    "nginx_lb: refusing to drain " + ", ".join(requested) + ": no other backend would be left to take connections"
                )
        else:
            drained_keys = [key for key in drained_keys if key not in requested]
            notes += [f"{key}: stays down, nginx_lb_down_servers lists it" for key in requested if key in static_keys]

    for server in servers:
        if server["key"] in static_keys:
            server["down"], server["down_reason"] = True, "nginx_lb_down_servers"
        elif server["key"] in drained_keys:
            server["down"], server["down_reason"] = True, "drained"
    return {"servers": servers, "drained": sorted(drained_keys), "notes": notes}


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Any]:
        return {"nginx_lb_upstream_plan": nginx_lb_upstream_plan}
