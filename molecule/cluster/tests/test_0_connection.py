"""The stack is reached as production hosts are: SSH as an unprivileged user, sudo for become."""

import re

from playbook_run import run_playbook

STACK = {"cluster-lb1", "cluster-ws1", "cluster-ws2", "cluster-redis1", "cluster-mon1"}


def test_ansible_reaches_every_host_over_ssh_as_deploy_and_becomes_root():
    result = run_playbook("connection.yml")
    assert result.returncode == 0, result.output
    seen = {
        host: (connection, login, escalated, ssh_connection)
        for host, connection, login, escalated, ssh_connection in re.findall(
            r"CONNECTION (\S+) (\S+) (\S+) (\S+) (\S+)", result.output
        )
    }
    assert set(seen) == STACK, result.output
    for host, (connection, login, escalated, ssh_connection) in seen.items():
        assert connection == "ssh", f"{host}: {connection}"
        assert login == "deploy" and login != "root", f"{host}: logged in as {login}"
        assert escalated == "root", f"{host}: become gave {escalated}"
        assert ssh_connection != "none", f"{host}: the session did not come through sshd"
