#!/usr/bin/python
"""Bring a Redis/Valkey Cluster to the layout the inventory describes.

The role computes the layout (which nodes form each shard, and which of them is
the preferred primary); this module only talks to the nodes, through the
distribution's own command-line client (redis-cli or valkey-cli), as the
operators' ACL user. It moves slots only to give a shard that holds much less
than its share a fair one (redis-cli's own rebalance); it never forgets a node.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: wsfleet_redis_cluster
short_description: Create, grow and operate a Redis/Valkey Cluster laid out by the inventory
description:
  - C(action=layout) meets every listed node, assigns the 16384 slots evenly to the
    first node of each shard when no slot is assigned yet, makes every other node of
    a shard a replica of that shard's primary (a graceful CLUSTER FAILOVER first when
    such a node still serves slots), and rebalances slots onto a shard whose primary
    holds less than 90 % of its fair share (a shard just added, or a rebalance that
    stopped halfway). A second run changes nothing.
  - C(action=demote) makes C(node) a replica before it is restarted, when it is a
    primary that serves slots, by a graceful CLUSTER FAILOVER on one of its replicas.
  - C(action=wait_ready) waits until C(node) answers, sees the cluster as ok and, as a
    replica, is connected to its primary and not loading a full sync.
  - Supports check mode (reports whether the layout would change).
options:
  action:
    description: What to do.
    type: str
    choices: [layout, demote, wait_ready]
    default: layout
  shards:
    description: For layout. Each shard's nodes as host:port, the preferred primary first.
    type: list
    elements: list
  node:
    description: For demote and wait_ready, the node as host:port.
    type: str
  cli:
    description: Path of redis-cli or valkey-cli.
    type: path
    required: true
  user:
    description: ACL user allowed to run CLUSTER commands and migrate keys.
    type: str
    required: true
  password:
    description: That user's password (passed in the environment, never on a command line).
    type: str
    required: true
    no_log: true
  timeout:
    description: Seconds to wait for each step to settle (handshakes, failovers, sync).
    type: int
    default: 60
"""

RETURN = r"""
actions:
  description: What was done (or, in check mode, would be done), in order.
  type: list
  elements: str
  returned: always
"""

SLOTS = 16384
# A primary holding less than this share of 16384 / shards gets slots moved to it
# (a new shard, or a rebalance that stopped early); redis-cli balances to within 2 %.
SHARE_FLOOR = 0.9
REBALANCE_ATTEMPTS = 3


class ClusterError(Exception):
    """A state the module will not change by itself; the message says why."""


class NodeView(NamedTuple):
    """One line of CLUSTER NODES."""

    node_id: str
    address: str  # host:port
    flags: set[str]
    master_id: str  # "-" for a primary
    slots: int  # slots served
    connected: bool

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


class Cluster:
    """The nodes, reached with the command-line client as the operators' user."""

    def __init__(self, module: AnsibleModule, cli: str, user: str, password: str, timeout: int) -> None:
        self.module = module
        self.cli = cli
        self.user = user
        self.password = password
        self.timeout = timeout
        self.actions: list[str] = []

    def run(self, node: str, *args: str, check: bool = True) -> str:
        host, _, port = node.rpartition(":")
        argv = [self.cli, "-h", host.strip("[]"), "-p", port, "--user", self.user, "--no-auth-warning", *args]
        rc, out, err = self.module.run_command(argv, environ_update={"REDISCLI_AUTH": self.password})
        reply = out.strip()
        failed = rc != 0 or reply.startswith(("ERR", "NOPERM", "WRONGPASS", "Could not connect", "NOAUTH"))
        if check and failed:
            raise ClusterError(f"{node}: {' '.join(args)}: {(reply or err).strip()}")
        return reply

    def info(self, node: str, *command: str) -> dict[str, str]:
        """The reply of INFO SECTION or CLUSTER INFO as a dict."""
        pairs = (line.split(":", 1) for line in self.run(node, *command).splitlines())
        return {pair[0].strip(): pair[1].strip() for pair in pairs if len(pair) == 2}

    def nodes(self, node: str) -> dict[str, NodeView]:
        """CLUSTER NODES as seen by ``node``, by node id."""
        views = {}
        for line in self.run(node, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if len(parts) < 8:
                continue
            served = 0
            for item in parts[8:]:
                if item.startswith("["):
                    continue  # a slot being imported or migrated: not served yet
                first, _, last = item.partition("-")
                served += (int(last) if last else int(first)) - int(first) + 1
            views[parts[0]] = NodeView(
                node_id=parts[0],
                address=parts[1].split("@", 1)[0],
                flags=set(parts[2].split(",")),
                master_id=parts[3],
                slots=served,
                connected=parts[7] == "connected",
            )
        return views

    def me(self, node: str) -> NodeView:
        """The node as it sees itself (authoritative for its own role and primary)."""
        return next(view for view in self.nodes(node).values() if "myself" in view.flags)

    def myid(self, node: str) -> str:
        return self.run(node, "CLUSTER", "MYID")

    def wait(self, what: str, predicate) -> None:
        deadline = time.monotonic() + self.timeout
        last_error = ""
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except ClusterError as error:
                last_error = f" (last error: {error})"
            time.sleep(0.5)
        raise ClusterError(f"timed out after {self.timeout} s waiting until {what}{last_error}")

    # ── layout ─────────────────────────────────────────────────────────────
    def layout(self, shards: list[list[str]], check_mode: bool) -> None:
        members = [node for shard in shards for node in shard]
        if len(set(members)) != len(members):
            raise ClusterError(f"a node is listed twice in the layout: {members}")
        ids = {}
        for node in members:
            if self.info(node, "INFO", "cluster").get("cluster_enabled") != "1":
                raise ClusterError(f"{node} does not run in cluster mode (cluster-enabled no)")
            ids[node] = self.myid(node)

        # The anchor is the node that knows the most: a member of the cluster if
        # there is one, so that new nodes join it and not the other way round.
        views_of = {node: self.nodes(node) for node in members}
        anchor = max(members, key=lambda node: (sum(v.slots for v in views_of[node].values()), len(views_of[node])))
        known = self.nodes(anchor)
        missing = [node for node in members if ids[node] not in known]
        if missing:
            self.actions.append(f"meet {', '.join(missing)}")
            if check_mode:
                return
            for node in missing:
                host, _, port = node.rpartition(":")
                self.run(anchor, "CLUSTER", "MEET", host.strip("[]"), port)
            self.wait("every node knows every other node", lambda: all(self._knows_all(node, ids) for node in members))

        if sum(view.slots for view in self.nodes(anchor).values()) == 0:
            self.actions.append(f"assign the {SLOTS} slots to {', '.join(shard[0] for shard in shards)}")
            if check_mode:
                return
            for index, shard in enumerate(shards):
                first, last = SLOTS * index // len(shards), SLOTS * (index + 1) // len(shards) - 1
                self.run(shard[0], "CLUSTER", "ADDSLOTSRANGE", str(first), str(last))
            self.wait("the cluster is ok on every node", lambda: self.all_ok(members))

        for shard in shards:
            self._replicate(shard, ids, check_mode)

        views = {node: self.me(node) for node in members}
        fair_share = SLOTS / len(shards)
        short = []
        for shard in shards:
            primary = next((node for node in shard if views[node].is_primary and views[node].slots), None)
            primary = primary or next((node for node in shard if views[node].is_primary), shard[0])
            if views[primary].slots < SHARE_FLOOR * fair_share:
                short.append(f"{primary} ({views[primary].slots} slots)")
        if short:
            # A new shard, or a rebalance that stopped halfway (the next run finishes it).
            self.actions.append(f"rebalance slots onto {', '.join(short)}; about {fair_share:.0f} each")
            if check_mode:
                return
            self._rebalance(anchor, members)

    def _rebalance(self, anchor: str, members: list[str]) -> None:
        """redis-cli's rebalance, key by key, once every node sees the cluster as ok.

        A node that has just joined or just become a replica may still see the
        cluster as down for a moment; a slot migrated to it then fails with
        CLUSTERDOWN. A failed attempt leaves the slots it moved where they are,
        and the next attempt goes on from there; an open slot left by an
        interrupted migration is closed with redis-cli's own fix first.
        """
        output = ""
        for _attempt in range(REBALANCE_ATTEMPTS):
            self.wait("the cluster is ok on every node", lambda: self.all_ok(members))
            rc, out, err = self.cluster_manager("check", anchor)
            if "open slot" in out.lower():
                self.cluster_manager("fix", anchor)
            rc, out, err = self.cluster_manager("rebalance", anchor, "--cluster-use-empty-masters")
            output = (out + err).strip()
            if rc == 0 and "[ERR]" not in out:
                self.wait("the cluster is ok on every node", lambda: self.all_ok(members))
                return
            time.sleep(2)
        raise ClusterError(f"rebalance failed {REBALANCE_ATTEMPTS} times; the last: {output[-2000:]}")

    def cluster_manager(self, command: str, node: str, *args: str) -> tuple[int, str, str]:
        """redis-cli --cluster COMMAND NODE ... (its cluster manager), as the operators' user."""
        return self.module.run_command(
            [self.cli, "--user", self.user, "--no-auth-warning", "--cluster", command, node, *args, "--cluster-yes"],
            environ_update={"REDISCLI_AUTH": self.password},
        )

    def all_ok(self, members: list[str]) -> bool:
        return all(self.info(node, "CLUSTER", "INFO").get("cluster_state") == "ok" for node in members)

    def _knows_all(self, node: str, ids: dict[str, str]) -> bool:
        views = self.nodes(node)
        return all(node_id in views and not views[node_id].failing for node_id in ids.values())

    def _replicate(self, shard: list[str], ids: dict[str, str], check_mode: bool) -> None:
        views = {node: self.me(node) for node in shard}
        serving = [node for node in shard if views[node].is_primary and views[node].slots]
        if len(serving) > 1:
            raise ClusterError(f"{', '.join(serving)} should be one shard but each serves slots: move the slots by hand")
        primary = serving[0] if serving else next((n for n in shard if views[n].is_primary), shard[0])
        if not views[primary].is_primary:
            raise ClusterError(f"no node of the shard {', '.join(shard)} is a primary (all replicate other shards)")
        for node in shard:
            if node == primary or views[node].master_id == ids[primary]:
                continue
            if views[node].is_primary and views[node].slots:
                # It serves another shard's slots (the layout grew): hand them to one
                # of its replicas first, gracefully, then it can follow its own shard.
                self.actions.append(f"fail {node} over to one of its replicas")
                if check_mode:
                    return
                self.demote(node)
            self.actions.append(f"make {node} a replica of {primary}")
            if check_mode:
                continue
            self.run(node, "CLUSTER", "REPLICATE", ids[primary])
            self.wait(f"{node} replicates {primary}", lambda node=node: self.me(node).master_id == ids[primary])

    # ── one node ───────────────────────────────────────────────────────────
    def demote(self, node: str) -> bool:
        views = self.nodes(node)
        me = self.me(node)
        if not (me.is_primary and me.slots):
            return False
        replicas = [view for view in views.values() if view.master_id == me.node_id and not view.failing and view.connected]
        if not replicas:
            raise ClusterError(f"{node} serves {me.slots} slots and has no healthy replica to take them over")
        replica = replicas[0].address
        self.run(replica, "CLUSTER", "FAILOVER")
        self.wait(f"{replica} took over from {node}", lambda: self.info(node, "INFO", "replication").get("role") == "slave")
        return True

    def ready(self, node: str) -> bool:
        views = self.nodes(node)
        if len(views) == 1 and not any(view.slots for view in views.values()):
            return True  # not in a cluster yet: the layout step will bring it in
        if self.info(node, "CLUSTER", "INFO").get("cluster_state") != "ok":
            return False
        replication = self.info(node, "INFO", "replication")
        if replication.get("role") == "slave":
            return replication.get("master_link_status") == "up" and replication.get("master_sync_in_progress") == "0"
        return True


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "choices": ["layout", "demote", "wait_ready"], "default": "layout"},
            "shards": {"type": "list", "elements": "list"},
            "node": {"type": "str"},
            "cli": {"type": "path", "required": True},
            "user": {"type": "str", "required": True},
            "password": {"type": "str", "required": True, "no_log": True},
            "timeout": {"type": "int", "default": 60},
        },
        required_if=[("action", "layout", ["shards"]), ("action", "demote", ["node"]), ("action", "wait_ready", ["node"])],
        supports_check_mode=True,
    )
    params = module.params
    cluster = Cluster(module, params["cli"], params["user"], params["password"], params["timeout"])
    try:
        if params["action"] == "layout":
            shards = [[str(node) for node in shard] for shard in params["shards"]]
            cluster.layout(shards, module.check_mode)
            changed = bool(cluster.actions)
        elif params["action"] == "demote":
            changed = False
            me = cluster.me(params["node"])
            if me.is_primary and me.slots:
                cluster.actions.append(f"fail {params['node']} over to one of its replicas")
                changed = True
                if not module.check_mode:
                    cluster.demote(params["node"])
        else:
            changed = False
            if not module.check_mode:
                cluster.wait(f"{params['node']} is ready", lambda: cluster.ready(params["node"]))
    except ClusterError as error:
        module.fail_json(msg=str(error), actions=cluster.actions)
    module.exit_json(changed=changed, actions=cluster.actions)


if __name__ == "__main__":
    main()
