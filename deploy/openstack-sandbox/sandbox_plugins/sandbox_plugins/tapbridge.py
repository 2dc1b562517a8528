"""The real sandbox's L2 agent, in one loop: each VM's tap joins the namespace's bridge, behind
its security groups.

Nova no longer plugs Linux bridges, and no agent runs here: ports are bound as VIF type
``tap`` (Nova's libvirt driver makes the tap), and this puts every ``tap*`` link on the
bridge as soon as ``ip monitor`` reports it (a scan every few seconds catches any missed).

It also enforces the ports' security groups with Neutron's own iptables firewall driver (the
one Neutron's Linux bridge agent ran): every few seconds it reads the ports, groups and rules
from Neutron's API and hands those of the taps present to the driver, which writes iptables
chains matched on the tap (``physdev``) in the FORWARD and INPUT paths of the namespace.
Traffic between a VM and another port of the bridge is filtered; traffic the namespace itself
sends (its bridge address: visa, the gateway, the probe, NFS) leaves through OUTPUT, which no
group filters, and only its answers pass the VM's egress rules.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _enslave(bridge: str) -> set[str]:
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout or "[]")
    taps = set()
    for link in links:
        name = link.get("ifname", "")
        if not name.startswith("tap"):
            continue
        taps.add(name)
        if link.get("master") != bridge:
            subprocess.run(["ip", "link", "set", name, "master", bridge, "up"], capture_output=True)
            print(f"{name} joined {bridge}", flush=True)
    return taps


class Firewall:
    """Neutron's IptablesFirewallDriver fed from Neutron's API (what the agent's RPC gave it)."""

    def __init__(self, bridge: str) -> None:
        from neutron.conf.agent import common as agent_config
        from neutron.conf.agent import securitygroups_rpc as sg_config
        from oslo_concurrency import lockutils
        from oslo_config import cfg

        agent_config.register_root_helper(cfg.CONF)
        sg_config.register_securitygroups_opts(cfg.CONF)
        cfg.CONF([], project="neutron")
        lock_path = Path(os.environ["VISA_SANDBOX_LOCKS"])
        lock_path.mkdir(parents=True, exist_ok=True)
        lockutils.set_defaults(str(lock_path))
        cfg.CONF.set_override("root_helper", "env", "AGENT")  # root already: no sudo
        cfg.CONF.set_override("enable_ipset", False, "SECURITYGROUP")  # remote groups as plain rules
        import neutron.privileged
        from oslo_privsep import priv_context

        # Root already: the privileged calls (conntrack, netlink) run in this process, no daemon.
        for name in dir(neutron.privileged):
            context = getattr(neutron.privileged, name)
            if isinstance(context, priv_context.PrivContext):
                context.set_client_mode(False)
        from neutron.agent.linux import iptables_firewall

        class Driver(iptables_firewall.IptablesFirewallDriver):  # type: ignore[misc]
            def _get_br_device_name(self, port: dict[str, Any]) -> str:
                return bridge

            def _get_jump_rules(self, port: dict[str, Any], create: bool = True) -> list[str]:
                # One conntrack zone for the whole bridge: the agent's zone per network would
                # put a VM's answers to the namespace's own connections (which leave through
                # OUTPUT, in the default zone) in another zone, where they look invalid.
                return []

        # Bridged frames through iptables (the driver only warns when they are not).
        Path("/proc/sys/net/bridge/bridge-nf-call-iptables").write_text("1\n")
        Path("/proc/sys/net/bridge/bridge-nf-call-ip6tables").write_text("1\n")
        self.driver = Driver()
        self.applied: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] = ({}, {}, {})
        self.session: Any = None

    def _get(self, path: str) -> list[dict[str, Any]]:
        if self.session is None:
            from keystoneauth1 import session
            from keystoneauth1.identity import v3

            auth = v3.Password(
                auth_url=os.environ["OS_AUTH_URL"], username="admin", password=os.environ["OS_PASSWORD"],
                project_name="admin", user_domain_name="Default", project_domain_name="Default",
            )  # fmt: skip
            self.session = session.Session(auth=auth)
        key = path.rsplit("/", 1)[-1].replace("-", "_")
        response = self.session.get(f"/v2.0/{path}", endpoint_filter={"service_type": "network"}, timeout=10)
        return list(response.json()[key])

    def wanted(self, taps: set[str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The filtered ports (by tap), the groups' rules and the groups' members, as the agent had them."""
        ports, members, rules = {}, {}, {}
        everything = self._get("ports")
        for port in everything:
            for group in port["security_groups"]:
                for fixed in port["fixed_ips"]:
                    ethertype = "IPv6" if ":" in fixed["ip_address"] else "IPv4"
                    members.setdefault(group, {"IPv4": [], "IPv6": []})[ethertype].append(
                        (fixed["ip_address"], port["mac_address"])
                    )
            tap = ("tap" + port["id"])[:14]
            if tap not in taps or not port["port_security_enabled"]:
                continue
            ports[tap] = {
                "device": tap, "id": port["id"], "network_id": port["network_id"], "mac_address": port["mac_address"],
                "fixed_ips": [f["ip_address"] for f in port["fixed_ips"]], "security_groups": port["security_groups"],
                "allowed_address_pairs": port.get("allowed_address_pairs", []), "port_security_enabled": True,
                "device_owner": port["device_owner"],
            }  # fmt: skip
        for rule in self._get("security-group-rules"):
            agent_rule = {k: v for k, v in rule.items() if v is not None and k in (
                "direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_group_id",
                "security_group_id")}  # fmt: skip
            if rule.get("remote_ip_prefix"):
                side = "source_ip_prefix" if rule["direction"] == "ingress" else "dest_ip_prefix"
                agent_rule[side] = rule["remote_ip_prefix"]
            rules.setdefault(rule["security_group_id"], []).append(agent_rule)
        for group in rules:
            members.setdefault(group, {"IPv4": [], "IPv6": []})
        return ports, rules, members

    def sync(self, taps: set[str]) -> None:
        ports, rules, members = self.wanted(taps)
        if (ports, rules, members) == self.applied:
            return
        old_ports = self.applied[0]
        with self.driver.defer_apply():
            for group, group_rules in rules.items():
                self.driver.update_security_group_rules(group, group_rules)
                self.driver.update_security_group_members(group, members[group])
            for tap, port in old_ports.items():
                if tap not in ports:
                    self.driver.remove_port_filter(port)
            for tap, port in ports.items():
                if tap not in old_ports:
                    self.driver.prepare_port_filter(port)
                else:
                    self.driver.update_port_filter(port)
        self.applied = (ports, rules, members)
        print(f"security groups applied to {sorted(ports) or 'no port'}", flush=True)


def main(bridge: str) -> None:
    monitor = subprocess.Popen(["ip", "monitor", "link"], stdout=subprocess.PIPE, text=True)
    assert monitor.stdout is not None
    firewall = Firewall(bridge)
    last_scan, failing = 0.0, ""
    while True:
        ready, _, _ = select.select([monitor.stdout], [], [], 2.0)
        if ready:
            monitor.stdout.readline()
        if ready or time.monotonic() - last_scan > 2.0:
            taps = _enslave(bridge)
            last_scan = time.monotonic()
            try:
                firewall.sync(taps)
                failing = ""
            except Exception as exc:  # Neutron not up yet, or down for a while: the next round tries again
                firewall.session = None  # with a new token: its catalogue may have been made since
                if str(exc) != failing:
                    failing = str(exc)
                    print(f"security groups not applied: {exc}", flush=True)
                    traceback.print_exc()


if __name__ == "__main__":
    main(sys.argv[1])
