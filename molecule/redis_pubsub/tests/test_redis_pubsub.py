"""Verify redis_pubsub on converged containers, the way an operator would check it:
with redis-cli (valkey-cli on the valkey host) inside each container, and with the
server's own client library from the controller over the private network."""

from __future__ import annotations

import re
import shlex
import uuid
from pathlib import Path

import pytest
import redis

PORTS = (6379, 6380)  # redis_pubsub_instances in molecule.yml
NOFILE = 9000 * 2 + 1024  # os_tuning_nofile_limit for wsfleet_target_connections=9000
WSFLEET = ("wsfleet", "wsfleet-molecule-secret-0001")
ADMIN = ("admin", "admin-molecule-secret-0002")
LUA_DIR = Path(__file__).resolve().parents[3] / "server" / "src" / "wsfleet" / "lua"
FLAVOR = {"redis-pubsub-debian12": "redis", "redis-pubsub-debian13": "valkey"}


def flavor(host) -> str:
    return FLAVOR[host.backend.get_hostname()]


def private_address(host) -> str:
    return next(address for address in host.interface("eth0").addresses if "." in address)


def unit(port: int) -> str:
    return f"wsfleet-redis@{port}.service"


def cli(host, port: int, *args: str, user: tuple[str, str] | None = None, address: str = "127.0.0.1"):
    """Run one command with the flavor's client; the password goes through the environment."""
    program = "valkey-cli" if flavor(host) == "valkey" else "redis-cli"
    command = [program, "-h", address, "-p", str(port)]
    environment = ""
    if user is not None:
        command += ["--user", user[0]]
        environment = f"REDISCLI_AUTH={shlex.quote(user[1])} "
    return host.run(environment + shlex.join([*command, *args]))


def reply(host, port: int, *args: str, user: tuple[str, str] | None = None, address: str = "127.0.0.1") -> str:
    result = cli(host, port, *args, user=user, address=address)
    assert result.rc == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("port", PORTS)
def test_each_instance_runs_under_its_own_unit(host, port):
    service = host.service(f"wsfleet-redis@{port}")
    assert service.is_running
    assert service.is_enabled
    config = host.file(f"/etc/{flavor(host)}/wsfleet-{port}.conf")
    assert config.mode == 0o640
    assert config.user == "root"
    assert config.group == flavor(host)
    for _, password in (WSFLEET, ADMIN):
        assert password not in config.content_string  # hashed, never in clear


def test_the_packages_own_service_is_masked(host):
    name = f"{flavor(host)}-server.service"
    assert host.run(f"systemctl is-enabled {name}").stdout.strip() == "masked"
    assert not host.service(name).is_running


@pytest.mark.parametrize("port", PORTS)
def test_listens_only_on_the_private_address_and_loopback(host, port):
    pid = host.check_output(f"systemctl show -p MainPID --value {unit(port)}")
    listeners = set()
    for line in host.check_output("ss -ltnpH").splitlines():
        fields = line.split()
        if f"pid={pid}," in line:
            listeners.add(fields[3])
    assert listeners == {f"{private_address(host)}:{port}", f"127.0.0.1:{port}"}


@pytest.mark.parametrize("port", PORTS)
def test_without_credentials_a_command_gets_noauth(host, port):
    for address in ("127.0.0.1", private_address(host)):
        assert reply(host, port, "GET", "wsfleet:{r}:epoch", address=address).startswith("NOAUTH")


@pytest.mark.parametrize("port", PORTS)
def test_wsfleet_user_publishes_and_subscribes(host, port):
    channel = shlex.quote(f"wsfleet:{{room-{uuid.uuid4().hex[:8]}}}")
    program = "valkey-cli" if flavor(host) == "valkey" else "redis-cli"
    auth = f"env REDISCLI_AUTH={shlex.quote(WSFLEET[1])} {program} -p {port} --user {WSFLEET[0]}"
    # A subscriber for one second in the background, and a publish it must receive.
    out = host.check_output(
        f"{auth} --raw PUBLISH {channel} early; timeout 1 {auth} --raw SUBSCRIBE {channel} > /tmp/sub-{port} & "
        f"sleep 0.3; {auth} --raw PUBLISH {channel} hello; wait; cat /tmp/sub-{port}"
    )
    assert out.split() == ["0", "1", "subscribe", channel.strip("'"), "1", "message", channel.strip("'"), "hello"]


@pytest.mark.parametrize("port", PORTS)
def test_wsfleet_user_writes_and_reads_streams(host, port):
    key = f"wsfleet:{{room-{uuid.uuid4().hex[:8]}}}:history"
    offset = reply(host, port, "XADD", key, "*", "f", '"alice"', "c", '"hi"', user=WSFLEET)
    assert offset.count("-") == 1
    assert reply(host, port, "XRANGE", key, "-", "+", user=WSFLEET).split("\n")[0] == offset


@pytest.mark.parametrize("port", PORTS)
def test_wsfleet_user_runs_the_servers_lua_scripts(host, port):
    room = f"room-{uuid.uuid4().hex[:8]}"
    keys = [f"wsfleet:{{{room}}}:history", f"wsfleet:{{{room}}}:epoch"]
    # publish.lua's third key is the call's token (a retried call stores nothing twice).
    token_key = f"wsfleet:{{{room}}}:pub:{uuid.uuid4().hex}"
    for name in ("publish.lua", "join.lua"):
        host.check_output(f"cat > /tmp/{name} <<'LUA'\n{(LUA_DIR / name).read_text()}\nLUA")
    offset = reply(
        host,
        port,
        "--eval",
        "/tmp/publish.lua",
        *keys,
        token_key,
        ",",
        f"wsfleet:{{{room}}}",
        room,
        '"alice"',
        '"hi"',
        "10",
        "60000",
        "epoch-1",
        "30000",
        user=WSFLEET,
    )
    assert offset.count("-") == 1, offset
    joined = reply(host, port, "--eval", "/tmp/join.lua", *keys, ",", "60000", "epoch-2", "", "", "10", user=WSFLEET).split("\n")
    assert joined[:3] == ["epoch-1", offset, "0"]


@pytest.mark.parametrize("port", PORTS)
def test_wsfleet_user_is_refused_everything_else(host, port):
    for command in (["FLUSHALL"], ["CONFIG", "GET", "save"], ["KEYS", "*"], ["ACL", "LIST"]):
        assert reply(host, port, *command, user=WSFLEET).startswith("NOPERM"), command
    # Inside the namespace only: keys and channels.
    assert reply(host, port, "GET", "other:key", user=WSFLEET).startswith("NOPERM")
    assert reply(host, port, "PUBLISH", "other-channel", "x", user=WSFLEET).startswith("NOPERM")


@pytest.mark.parametrize("port", PORTS)
def test_persistence_is_off_and_memory_bounded(host, port):
    names = ["save", "appendonly", "maxmemory-policy", "maxmemory", "protected-mode", "maxclients", "client-output-buffer-limit"]
    lines = cli(host, port, "CONFIG", "GET", *names, user=ADMIN).stdout.split("\n")
    config = dict(zip(lines[0::2], lines[1::2], strict=False))  # name, value, name, value...
    assert config["save"] == ""
    assert config["appendonly"] == "no"
    assert config["maxmemory-policy"] == "volatile-ttl"
    assert int(config["maxmemory"]) > 0
    assert config["protected-mode"] == "yes"
    assert config["maxclients"] == "10000"
    assert config["client-output-buffer-limit"].endswith("pubsub 268435456 67108864 60")


@pytest.mark.parametrize("port", PORTS)
def test_the_open_file_limit_reached_the_process(host, port):
    pid = host.check_output(f"systemctl show -p MainPID --value {unit(port)}")
    line = next(
        line for line in host.file(f"/proc/{pid}/limits").content_string.splitlines() if line.startswith("Max open files")
    )
    assert line.split()[3:5] == [str(NOFILE), str(NOFILE)]


def test_the_unit_is_hardened(host):
    shown = host.check_output(
        f"systemctl show -p NoNewPrivileges -p ProtectSystem -p ProtectHome -p PrivateTmp -p PrivateDevices "
        f"-p RestrictAddressFamilies -p ReadWritePaths -p User {unit(PORTS[0])}"
    )
    settings = dict(line.split("=", 1) for line in shown.splitlines())
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert settings["ProtectHome"] == "yes"
    assert settings["PrivateTmp"] == "yes"
    assert settings["PrivateDevices"] == "yes"
    assert settings["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"
    assert settings["ReadWritePaths"] == f"/var/lib/{flavor(host)}/wsfleet-{PORTS[0]}"
    assert settings["User"] == flavor(host)


@pytest.mark.parametrize("port", PORTS)
def test_the_servers_client_library_works_as_the_wsfleet_user(host, port):
    """redis-py, as wsfleet/broker.py uses it: connect handshake, EVALSHA falling back
    to SCRIPT LOAD, XRANGE and SUBSCRIBE, from another machine over the private network."""
    client = redis.Redis(host=private_address(host), port=port, username=WSFLEET[0], password=WSFLEET[1], socket_timeout=5)
    try:
        room = f"room-{uuid.uuid4().hex[:8]}"
        keys = [f"wsfleet:{{{room}}}:history", f"wsfleet:{{{room}}}:epoch"]
        publish = client.register_script((LUA_DIR / "publish.lua").read_text())
        join = client.register_script((LUA_DIR / "join.lua").read_text())
        pubsub = client.pubsub()
        pubsub.subscribe(f"wsfleet:{{{room}}}")
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
        token_key = f"wsfleet:{{{room}}}:pub:{uuid.uuid4().hex}"
        args = [f"wsfleet:{{{room}}}", room, '"bob"', '"hey"', 10, 60000, "epoch-1", 30000]
        offset = publish(keys=[*keys, token_key], args=args).decode()
        # The same call again (a retry after a lost reply) stores and publishes nothing.
        assert publish(keys=[*keys, token_key], args=args).decode() == offset
        message = pubsub.get_message(timeout=2)
        assert message["type"] == "message" and message["data"].startswith(offset.encode() + b" ")
        assert join(keys=keys, args=[60000, "epoch-2", "", "", 10])[:3] == [b"epoch-1", offset.encode(), 0]
        assert client.xrange(keys[0], "-", "+", 10)[0][0].decode() == offset
        assert client.ping()
        pubsub.close()
    finally:
        client.close()


@pytest.mark.parametrize("port", PORTS)
def test_the_configuration_names_the_installed_server_version(host, port):
    version = re.search(r"v=([0-9.]+)", host.check_output(f"{flavor(host)}-server --version")).group(1)
    header = host.file(f"/etc/{flavor(host)}/wsfleet-{port}.conf").content_string.splitlines()[1]
    assert f"({flavor(host)} {version})" in header, header


@pytest.mark.parametrize("port", PORTS)
def test_the_client_librarys_handshake_gets_no_acl_denial(host, port):
    """redis-py sends CLIENT SETINFO on every connection (servers >= 7.2 know it)."""
    reply(host, port, "ACL", "LOG", "RESET", user=ADMIN)
    client = redis.Redis(host=private_address(host), port=port, username=WSFLEET[0], password=WSFLEET[1], socket_timeout=5)
    try:
        assert client.ping()
    finally:
        client.close()
    assert "setinfo" not in reply(host, port, "ACL", "LOG", user=ADMIN)
    rules = reply(host, port, "ACL", "GETUSER", WSFLEET[0], user=ADMIN)
    version = re.search(r"v=([0-9]+)\.([0-9]+)", host.check_output(f"{flavor(host)}-server --version")).groups()
    if tuple(map(int, version)) >= (7, 2):
        assert "+client|setinfo" in rules
