"""`dsas`: the operator's command. Logic lives outside this package; these are thin."""

from __future__ import annotations

import importlib

import click

from .. import __version__
from .common import OneLineErrorsGroup

# command -> (module in provision.cli, attribute). Modules load only when their
# command runs (or when --help lists them): `dsas check` does not pay for
# paramiko, aiohttp or the image builder.
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("inventory", "check"),
    "hosts": ("inventory", "hosts"),
    "render": ("inventory", "render"),
    "serve": ("serve", "serve"),
    "status": ("status", "status"),
    "setup": ("setup", "setup"),
    "discovered": ("dhcp", "discovered"),
    "dns": ("dns", "dns"),
    "image": ("image", "image"),
    "push": ("push", "push_group"),
    "trust": ("push", "trust"),
    "lb": ("lb", "lb"),
    "demo": ("demo", "demo"),
    "host": ("hostedit", "host_group"),
    "enlist": ("hostedit", "enlist"),
    "assign": ("assign", "assign"),
    "rollout": ("rollout", "rollout"),
    "inventory": ("invhistory", "inventory_group"),
    "master": ("master", "master"),
}


class LazyGroup(OneLineErrorsGroup):
    """The `dsas` group: each command group's module is imported only when used."""

    @property  # type: ignore[override]
    def commands(self) -> dict[str, click.Command]:
        """Every command, loaded (for tools that walk the tree, such as click-man)."""
        out = {}
        for name in COMMANDS:
            cmd = self.get_command(click.Context(self), name)
            if cmd is not None:
                out[name] = cmd
        return out

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        pass  # the table above is the only source of commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name]
        cmd = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
        assert isinstance(cmd, click.Command)
        return cmd


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="dsas")
def cli() -> None:
    """dsas -- netboot provisioning and image distribution for server farms.

    One inventory file (YAML) describes the cluster: networks, hardware types,
    roles, hosts and the load balancers' virtual services. From it dsas renders
    each host's /etc/dsas.conf and boot files, and the master serves DHCP, TFTP,
    HTTP and DNS so machines PXE-boot into their role.

    \b
    Inventory lookup: --inventory FILE, then $DSAS_INVENTORY, then
    /etc/dsas/cluster.yaml.
    Exit status: 0 success, 1 failure (invalid inventory, a host failed),
    2 usage error.
    """


def main() -> None:
    cli(prog_name="dsas")
