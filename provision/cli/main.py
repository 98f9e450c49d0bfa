"""`dsas`: the operator's command. Logic lives outside this package; these are thin."""

from __future__ import annotations

import click

from .. import __version__
from . import demo as demo_cmds
from . import dns as dns_cmds
from . import image as image_cmds
from . import inventory as inventory_cmds
from . import push as push_cmds
from . import serve as serve_cmds


@click.group(
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


inventory_cmds.register(cli)
serve_cmds.register(cli)
demo_cmds.register(cli)
dns_cmds.register(cli)
push_cmds.register(cli)
image_cmds.register(cli)


def main() -> None:
    cli(prog_name="dsas")
