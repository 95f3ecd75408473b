"""Properties of the role as Ansible runs it: a changed setting restarts only its
own instance, check mode reports nothing to do, wrong or missing input stops the
role before it changes anything. These run playbooks against the converged
containers, after the host checks (test files run in name order)."""

from __future__ import annotations

import json
import os

import pytest
import testinfra
from playbook_run import run_playbook
from test_redis_pubsub import ADMIN, FLAVOR, PORTS, WSFLEET, cli, reply, unit

UNTOUCHED, CHANGED = PORTS
STRAY = 6390  # an instance left from an earlier inventory
MIB = 1024 * 1024


def no_change(result) -> bool:
    recap = result.recap()
    return bool(recap) and all(counts["changed"] == 0 for counts in recap.values())


def started(host) -> dict[int, tuple[str, str]]:
    """MainPID and start time of each instance."""
    states = {}
    for port in PORTS:
        shown = host.check_output(f"systemctl show -p MainPID -p ActiveEnterTimestampMonotonic {unit(port)}")
        values = dict(line.split("=", 1) for line in shown.splitlines())
        states[port] = (values["MainPID"], values["ActiveEnterTimestampMonotonic"])
    return states


def maxmemory(host, port: int) -> int:
    return int(cli(host, port, "CONFIG", "GET", "maxmemory", user=ADMIN).stdout.split("\n")[1])


def start_stray_instance(host) -> None:
    """Run one more instance, as if an earlier inventory had listed it."""
    folder = f"/etc/{FLAVOR[host.backend.get_hostname()]}"
    host.check_output(
        f"sed 's/^port {CHANGED}$/port {STRAY}/; s/wsfleet-{CHANGED}$/wsfleet-{STRAY}/' {folder}/wsfleet-{CHANGED}.conf"
        f" > {folder}/wsfleet-{STRAY}.conf && install -d -o {FLAVOR[host.backend.get_hostname()]} -m 0750"
        f" /var/lib/{FLAVOR[host.backend.get_hostname()]}/wsfleet-{STRAY} && systemctl enable --now {unit(STRAY)}"
    )


@pytest.fixture(scope="module")
def changed_instances():
    """One converge with instance 6380's maxmemory changed; its own states around it.

    The new value differs from the one the instance has, so the verifier can run
    again on the same containers: 100 MiB, or 120 MiB when it has 100 already."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    hosts = {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in FLAVOR}
    target = 120 if any(maxmemory(one, CHANGED) == 100 * MIB for one in hosts.values()) else 100
    extra_vars = json.dumps({"redis_pubsub_instances": [{"port": UNTOUCHED}, {"port": CHANGED, "maxmemory": f"{target}mb"}]})
    for one in hosts.values():
        start_stray_instance(one)
    before = {name: started(one) for name, one in hosts.items()}
    result = run_playbook("converge.yml", "-e", extra_vars)
    after = {name: started(one) for name, one in hosts.items()}
    return {"result": result, "extra_vars": extra_vars, "target": target * MIB, "before": before, "after": after}


def test_a_changed_setting_restarts_only_its_own_instance(host, changed_instances):
    result = changed_instances["result"]
    assert result.returncode == 0, result.output
    name = host.backend.get_hostname()
    before, after = changed_instances["before"][name], changed_instances["after"][name]
    assert after[UNTOUCHED] == before[UNTOUCHED]  # same MainPID, same start time
    assert after[CHANGED][0] != before[CHANGED][0]
    assert maxmemory(host, CHANGED) == changed_instances["target"]
    assert reply(host, CHANGED, "PING", user=WSFLEET) == "PONG"


def test_an_instance_no_longer_listed_is_stopped_and_unconfigured(host, changed_instances):
    assert changed_instances["result"].returncode == 0, changed_instances["result"].output
    service = host.service(f"wsfleet-redis@{STRAY}")
    assert not service.is_running
    assert not service.is_enabled
    assert not host.file(f"/etc/{FLAVOR[host.backend.get_hostname()]}/wsfleet-{STRAY}.conf").exists
    assert host.file(f"/var/lib/{FLAVOR[host.backend.get_hostname()]}/wsfleet-{STRAY}").is_directory  # data is kept


def test_check_mode_reports_no_change(changed_instances):
    """On the host as converged just above."""
    result = run_playbook("converge.yml", "--check", "-e", changed_instances["extra_vars"])
    assert result.returncode == 0, result.output
    assert no_change(result), result.output


def test_a_missing_password_fails_early_with_a_clear_message():
    result = run_playbook("role_only.yml", "-e", "redis_pubsub_wsfleet_password=")
    assert result.returncode != 0
    assert "redis_pubsub_wsfleet_password is not set" in result.output
    assert "ansible-vault" in result.output
    assert ADMIN[1] not in result.output
    assert no_change(result), result.output


@pytest.mark.parametrize(
    ("extra_vars", "expected"),
    [
        ({"redis_pubsub_flavor": "keydb"}, "redis_pubsub_flavor must be one of"),
        ({"redis_pubsub_instances": [{"port": "lots"}]}, "redis_pubsub_instances"),
    ],
    ids=["flavor", "port"],
)
def test_wrong_input_fails_with_the_argument_spec_message(extra_vars, expected):
    result = run_playbook("role_only.yml", "-e", json.dumps(extra_vars))
    assert result.returncode != 0
    assert expected in result.output, result.output
    assert no_change(result), result.output


def test_a_flavor_not_packaged_for_the_release_fails_naming_the_variable():
    result = run_playbook("role_only.yml", "--limit", "redis-pubsub-debian12", "-e", "redis_pubsub_flavor=valkey")
    assert result.returncode != 0
    assert "redis_pubsub_flavor=valkey: installing valkey-server, valkey-tools failed on Debian 12" in result.output, (
        result.output
    )
    assert "use redis_pubsub_flavor=redis" in result.output


def test_a_package_upgrade_restarts_the_instances_onto_the_new_binary(changed_instances):
    """dpkg replaces a binary by renaming a new file over it: the running instances keep
    the old, deleted one. The next run restarts them (one at a time) onto the new one."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    hosts = {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={inventory}") for name in FLAVOR}
    for name, one in hosts.items():
        # /usr/bin/redis-server is a symlink (to redis-check-rdb on Debian): the
        # file the package replaces, and the running process maps, is its target.
        binary = one.check_output(f"readlink -f /usr/bin/{FLAVOR[name]}-server")
        one.check_output(f"cp -p {binary} {binary}.wsfleet-test && mv {binary}.wsfleet-test {binary}")
    before = {name: started(one) for name, one in hosts.items()}
    result = run_playbook("converge.yml", "-e", changed_instances["extra_vars"])
    assert result.returncode == 0, result.output
    for name, one in hosts.items():
        after = started(one)
        for port in PORTS:
            assert after[port][0] != before[name][port][0], (name, port)
            assert not one.file(f"/proc/{after[port][0]}/exe").linked_to.endswith("(deleted)")
            assert reply(one, port, "PING", user=WSFLEET) == "PONG"
