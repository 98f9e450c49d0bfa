"""The jinja2 environment and the render entry points."""

from __future__ import annotations

import os
import re
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .. import layout
from ..balancer.members import Overrides, members
from ..inventory.model import TAKEOVER_PRIORITY, Host, Inventory
from ..policy import dns
from ..push.multicast import DEFAULT_GROUP as UFTP_GROUP
from ..push.multicast import DEFAULT_PORT as UFTP_PORT

PACKAGE_TEMPLATES = Path(__file__).parent / "templates"

# what -> template file, for `dsas render HOST --what ...`
HOST_FILES = {
    "dsas.conf": "dsas.conf.j2",
    "ipxe": "boot.ipxe.j2",
    "pxelinux": "pxelinux.cfg.j2",
    "grub": "grub.cfg.j2",
    "keepalived": "keepalived.conf.j2",
}
# The kinds that boot the host's image: they need one, and follow its manifest.
BOOT_FILES = frozenset({"ipxe", "pxelinux", "grub"})

# Command lines go through iPXE, pxelinux and the kernel: allow a conservative set.
CMDLINE_OK = re.compile(r"^[A-Za-z0-9_.,:=/+@%~ \[\]-]*$")  # [..]: IPv6 URLs


class RenderError(Exception):
    """A template cannot be rendered for this host (named, with the reason)."""

    exit_code = 1


class Environments:
    """One jinja2 Environment per template override directory, built on first use.

    `dsas serve` renders on every TFTP and HTTP request: building an Environment
    (and compiling its templates) each time cost more than the render. Templates
    are read once and kept (no ``auto_reload``: no stat per request) until
    ``clear()``, which a SIGHUP reload calls (``BootTree.reload``), so a changed or
    newly added override is picked up with the inventory.
    """

    LIMIT = 16  # directories kept (a long test run renders from many)

    def __init__(self) -> None:
        self._envs: dict[str, jinja2.Environment] = {}
        self._lock = threading.Lock()

    def get(self, templates: str | Path | None) -> jinja2.Environment:
        key = os.path.abspath(templates) if templates else ""
        with self._lock:
            env = self._envs.get(key)
            if env is None:
                if len(self._envs) >= self.LIMIT:
                    self._envs.clear()
                env = self._envs[key] = _build_environment(key or None)
            return env

    def clear(self) -> None:
        with self._lock:
            self._envs.clear()


def _build_environment(templates: str | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if templates:
        loaders.append(jinja2.FileSystemLoader(templates))
    loaders.append(jinja2.FileSystemLoader(str(PACKAGE_TEMPLATES)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        auto_reload=False,
    )
    env.filters["shq"] = _shell_quote
    env.filters["kq"] = _keepalived_quote
    return env


ENVIRONMENTS = Environments()


def reload_templates() -> None:
    """Forget every Environment: the next render reads the templates again."""
    ENVIRONMENTS.clear()


def _shell_quote(value: Any) -> str:
    s = "" if value is None else str(value)
    if s and re.fullmatch(r"[A-Za-z0-9_./:@%+=,-]+", s):
        return s
    return shlex.quote(s)


def _keepalived_quote(value: Any) -> str:
    s = str(value)
    if '"' in s or "\n" in s:
        raise RenderError(f"cannot quote {s!r} for keepalived.conf")
    return f'"{s}"'


def _template_dir(inv: Inventory, templates: str | Path | None) -> str | Path | None:
    return templates or inv.cluster.templates


def _render(inv: Inventory, name: str, templates: str | Path | None, **ctx: Any) -> str:
    env = ENVIRONMENTS.get(_template_dir(inv, templates))
    try:
        return env.get_template(name).render(inv=inv, layout=layout, **ctx)
    except jinja2.UndefinedError as e:
        raise RenderError(f"template {name}: {e.message}") from None
    except jinja2.TemplateError as e:
        raise RenderError(f"template {name}: {e}") from None


def kernel_cmdline(inv: Inventory, host: Host, payload: ImagePayload | None = None) -> str:
    """The kernel command line that boots ``host``; refuses unsafe characters.

    ``payload`` describes the image in the store (from its manifest; None: an image
    dsas built). dsas's own ``dsas.*`` arguments go only to an image whose initrd
    runs dsas's boot scripts; a foreign one gets its own arguments (from the
    import) and the cluster's, image's, role's and host's, without any ``dsas.*``.
    """
    image = inv.images.get(host.image) if host.image else None
    extra = [inv.cluster.kernel_args, image.kernel_args if image else "", host.kernel_args]
    if payload is None or payload.dsas_boot:
        parts = [
            f"dsas.url={layout.url(inv, layout.dsas_conf_path(host), host)}",
            f"dsas.host={host.name}",
            f"dsas.master={layout.base_url(inv, host)}",
            f"dsas.mac={host.macs[0]}",
            _ip6_args(host),
            payload.kernel_args if payload else "",
            *extra,
        ]
    else:
        parts = [payload.kernel_args, *(" ".join(w for w in p.split()
                                                 if not w.startswith("dsas."))
                                        for p in extra)]
    line = " ".join(p for p in parts if p)
    if not CMDLINE_OK.match(line):
        raise RenderError(f"host {host.name}: kernel command line has forbidden characters: "
                          f"{line!r}")
    return line


def _ip6_args(host: Host) -> str:
    """A netboot6 host's initramfs takes its IPv6 address from the command line
    (no DHCPv4 on its link; the RA has no autonomous flag, so no SLAAC)."""
    if not host.netboot6:
        return ""
    itf = host.primary_interface
    gw = itf.network.gateway6
    return f"dsas.ip6={itf.cidr6}" + (f" dsas.gw6={gw}" if gw else "")


@dataclass(frozen=True)
class ImagePayload:
    """What the renderers need from an image's manifest."""

    dsas_boot: bool = True  # the initrd runs dsas's boot scripts (takes dsas.* args)
    kernel_args: str = ""  # the payload's own arguments (`dsas image import --kernel-args`)


def host_context(inv: Inventory, host: Host,
                 payload: ImagePayload | None = None) -> dict[str, Any]:
    img = layout.host_image(inv, host)
    kernel_path = layout.image_file(*img, layout.KERNEL) if img else None
    initrd_path = layout.image_file(*img, layout.INITRD) if img else None
    lvs = [(pair, state) for h, pair, state in inv.lvs_hosts() if h.name == host.name]
    modules = [m.line() for m in host.hwtype.modules] + [m.line() for m in host.role.modules]
    if host.bond.enabled:
        modules.append(f"bonding {host.bond.options()}")
    if any(itf.network.vlan for itf in host.interfaces):
        modules.append("8021q")
    modules = list(dict.fromkeys(modules))
    units: list[str] = []
    for s in host.services:
        units.extend(inv.service_units.get(s, (s,)))
    return {
        "host": host,
        "fqdn": dns.host_fqdn(inv, host.name),
        "image": img,
        "image_dir": layout.image_dir(*img) if img else None,
        "kernel_url": layout.url(inv, kernel_path, host) if kernel_path else None,
        "initrd_url": layout.url(inv, initrd_path, host) if initrd_path else None,
        "master_url": layout.base_url(inv, host),
        "kernel_path": kernel_path,
        "initrd_path": initrd_path,
        "cmdline": kernel_cmdline(inv, host, payload),
        "modules": modules,
        "units": list(dict.fromkeys(units)),
        "lvs": lvs,
        "lvs_director": _lvs_director(inv, host, lvs),
        "lvs_real": _lvs_real(inv, host),
        "dns_servers": _dns_servers(host),
        # dsas-push's multicast group and port (push/multicast.py), for the node's uftpd
        "uftp": {"group": UFTP_GROUP, "port": UFTP_PORT},
    }


def _lvs_director(inv: Inventory, host: Host, lvs: list[Any]) -> dict[str, Any] | None:
    """What dsas-init's lvs step needs on a director (None: not in an LVS pair)."""
    if not lvs:
        return None
    services = [vs for pair, _ in lvs for vs in inv.services_of_pair(pair.name)]
    return {
        "conf_url": layout.url(inv, layout.keepalived_conf_path(host)),
        "schedulers": list(dict.fromkeys(vs.scheduler for vs in services)),
        "forwarding": list(dict.fromkeys(vs.forwarding for vs in services)),
    }


def _lvs_real(inv: Inventory, host: Host) -> dict[str, Any]:
    """A real server's part: DR VIPs on lo; for NAT, the inside gateway VIP to route by."""
    dr: list[str] = []
    nat_gw = ""
    net = host.primary_interface.network.name
    for vs in inv.virtual_services.values():
        if vs.role != host.role.name:
            continue
        if vs.forwarding == "DR" and str(vs.vip) not in dr:
            dr.append(str(vs.vip))
        elif vs.forwarding == "NAT" and not nat_gw:
            pair = inv.lvs_pairs.get(vs.pair)
            gw = pair.gateway_vips.get(net) if pair else None
            nat_gw = str(gw) if gw else ""
    return {"dr_vips": dr, "nat_gateway": nat_gw}


def _dns_servers(host: Host) -> list[str]:
    seen: list[str] = []
    for itf in host.interfaces:
        for a in itf.network.dns:
            if str(a) not in seen:
                seen.append(str(a))
    return seen


def render_host(inv: Inventory, host: Host, what: str, templates: str | Path | None = None,
                payload: ImagePayload | None = None, lb: Overrides | None = None) -> str:
    """One per-host file: ``dsas.conf``, ``ipxe``, ``pxelinux`` or ``keepalived``."""
    if what not in HOST_FILES:
        raise RenderError(f"unknown file kind {what!r} (known: {', '.join(HOST_FILES)})")
    if what == "keepalived":
        return render_keepalived(inv, host, templates, lb)
    ctx = host_context(inv, host, payload)
    if what in BOOT_FILES and ctx["image"] is None:
        raise RenderError(f"host {host.name} has no image to boot")
    return _render(inv, HOST_FILES[what], templates, **ctx)


def render_pxelinux_default(inv: Inventory, templates: str | Path | None = None) -> str:
    """pxelinux.cfg/default: what a machine not in the inventory sees."""
    return _render(inv, "pxelinux-default.cfg.j2", templates)


def render_discovery_ipxe(inv: Inventory, templates: str | Path | None = None) -> str:
    """The iPXE script an unknown machine gets when discovery is on: no host image."""
    return _render(inv, "discovery.ipxe.j2", templates)


def render_keepalived(inv: Inventory, host: Host, templates: str | Path | None = None,
                      overrides: Overrides | None = None) -> str:
    """keepalived.conf for one host of an LVS pair.

    ``overrides`` (the state store's ``lb_members``, see ``balancer.members``): hosts
    drained (weight 0), held out of, or kept in a pool while `dsas assign` moves them;
    this host taking a pair's VIPs over (TAKEOVER_PRIORITY, preempt) from a director
    that leaves it.
    """
    mine = [(pair, state) for h, pair, state in inv.lvs_hosts() if h.name == host.name]
    if not mine:
        raise RenderError(f"host {host.name} is not in an LVS pair")
    pairs = []
    for pair, state in mine:
        services = inv.services_of_pair(pair.name)
        # One VRRP instance per network carrying VIPs (or a gateway VIP), in a sync group
        nets: dict[str, list[str]] = {}
        for vs in services:
            net = inv.network_of(vs.vip)
            if net is not None:
                nets.setdefault(net.name, [])
                if str(vs.vip) not in nets[net.name]:
                    nets[net.name].append(str(vs.vip))
        for net_name, vip in pair.gateway_vips.items():
            nets.setdefault(net_name, [])
            if str(vip) not in nets[net_name]:
                nets[net_name].append(str(vip))
        instances = []
        for i, net_name in enumerate(sorted(nets, key=list(inv.networks).index)):
            itf = host.interface_on(net_name)
            if itf is None:
                raise RenderError(f"LVS host {host.name} has no interface on {net_name}")
            instances.append({
                "name": f"{pair.name}_{net_name}",
                "interface": itf.device,
                "vrid": (pair.virtual_router_id + i - 1) % 255 + 1,
                "vips": [(v, itf.network.prefixlen, itf.device) for v in nets[net_name]],
            })
        real = {vs.name: [(m.address, 0 if m.drained else vs.weight)
                          for m in members(inv, vs.role, overrides)] for vs in services}
        take = (overrides or {}).get((host.name, pair.name))
        taking = take is not None and take.state == "takeover"
        pairs.append({"pair": pair, "state": state, "instances": instances,
                      "services": services, "real": real, "takeover": taking,
                      "priority": TAKEOVER_PRIORITY if taking else pair.priority_of(host.name),
                      "preempt": taking or pair.preempt,
                      "preempt_delay": 0 if taking else pair.preempt_delay})
    # the first checks' connect timeout, and 2 s for the checks and IPVS to settle
    checks = [vs.check.connect_timeout for pair, _ in mine
              for vs in inv.services_of_pair(pair.name)]
    return _render(inv, "keepalived.conf.j2", templates, host=host, pairs=pairs,
                   startup_delay=max(checks) + 2 if checks else 0)


def render_zone(inv: Inventory, templates: str | Path | None = None, serial: int = 1) -> str:
    """The records the DNS server holds (``policy.dns.records``), master-file style
    (RFC 1035 section 5): what `dsas dns zone` and `dsas render --what zone` print."""
    return _render(inv, "zone.j2", templates, records=dns.records(inv, serial), serial=serial)
