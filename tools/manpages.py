"""Manual pages for dsas, dsas-push and dsas-clone, from the commands' own help.

    python tools/manpages.py OUTDIR

One page per command that runs (``dsas-check.1`` for `dsas check`, ``dsas-image-build.1``
for `dsas image build`), one per group and one per program. Why not click-man: it
made the NAME line from the help's first line cut at 45 characters
(``dsas \\- dsas -- netboot provisioning and image...``), wrote `dsas push` and the
`dsas-push` program to the same ``dsas-push.1``, filled the help's verbatim (\\b)
blocks into one paragraph, printed defaults as found (a build path in
``dsas-demo.1``), and has no EXAMPLES, FILES, ENVIRONMENT or SEE ALSO.

Here: NAME is "page \\- the first sentence", with the program's own name in front
of it dropped; \\b blocks stay verbatim; a default under the source tree is shown
relative to it; EXAMPLES come from the table below (else from the help's verbatim
lines that start with the command); FILES, ENVIRONMENT and SEE ALSO are shared.
Output is reproducible: no date, sorted pages.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from provision import __version__  # noqa: E402
from provision.cli.main import cli  # noqa: E402

MANUAL = "dsas manual"

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "dsas": [("Check the inventory, then list its web hosts:",
              "dsas check -i cluster.yaml\ndsas hosts -i cluster.yaml --role web"),
             ("Serve the cluster's machines on one interface:",
              "dsas serve --interface eth1")],
    "dsas check": [("Validate a changed inventory before reloading the master:",
                    "dsas check -i /etc/dsas/cluster.yaml && systemctl reload dsas-serve"),
                   ("The problems as JSON, for a script:", "dsas check --json")],
    "dsas hosts": [("The hosts of two roles:", "dsas hosts --role web --role db"),
                   ("Every host's MACs, with jq:",
                    "dsas hosts --json | jq -r '.hosts[] | .host + \" \" + .macs[0]'")],
    "dsas render": [("One host's iPXE script:", "dsas render w101 --what ipxe"),
                    ("Every file of every host into a new directory:",
                     "dsas render --all --out /tmp/rendered")],
    "dsas serve": [("All services on one interface, with a line per file served:",
                    "dsas serve --interface eth1 -v"),
                   ("Only DHCP and TFTP, behind an existing DHCP server (proxy mode):",
                    "dsas serve --only dhcp,tftp --proxy --interface eth1"),
                   ("Reload the inventory without a restart:",
                    "kill -HUP $(systemctl show -p MainPID --value dsas-serve)")],
    "dsas discovered": [("Machines that asked for an address and are not in the inventory:",
                         "dsas discovered"),
                        ("Their MACs only:", "dsas discovered --json | jq -r '.machines[].mac'")],
    "dsas dns": [("What the master answers for a host:", "dsas dns query w101.farm.example")],
    "dsas dns zone": [("The whole zone, master-file style:", "dsas dns zone")],
    "dsas dns query": [("A reverse lookup:", "dsas dns query 198.18.1.3 PTR")],
    "dsas image": [("Build the netboot initramfs and list the store:",
                    "dsas image build netboot\ndsas image list")],
    "dsas image build": [("Build two images into the boot tree:",
                          "dsas image build netboot tiny --boot-root /srv/dsas/boot")],
    "dsas image list": [("Every image and version, * marking current:", "dsas image list")],
    "dsas image promote": [("Make a version the one hosts boot:",
                            "dsas image promote tiny@20261201-1")],
    "dsas image verify": [("Re-hash the current version of an image:", "dsas image verify tiny")],
    "dsas push": [("The last pushes:", "dsas push log")],
    "dsas push log": [("The last five runs, then one run host by host:",
                       "dsas push log -n 5\ndsas push log --run 12"),
                      ("As JSON:", "dsas push log --json")],
    "dsas trust": [("Trust the key a node sent in its boot report:",
                    "dsas trust w101 --from-boot-report")],
    "dsas demo": [("Boot the three lab guests, live:", "sudo make demo"),
                  ("Two guests, one with UEFI and an e1000 NIC:",
                   "sudo dsas demo --guests w101:bios,w103:uefi:e1000"),
                  ("No VMs: validate and render the example cluster:",
                   "dsas demo --offline --workdir /tmp/demo")],
    "dsas-push": [("Push a tree to every web host:", "dsas-push ./site --role web --to /srv/site"),
                  ("Which release each host serves (drift and unreachable hosts apart):",
                   "dsas-push --status --all --to /srv/site"),
                  ("Back to the previous release on one host:",
                   "dsas-push --rollback --host w101 --to /srv/site")],
    "dsas-clone": [("Copy a host's image onto its disk:", "dsas-clone w101 --target /dev/sda"),
                   ("Into an image file, from a running peer:",
                    "dsas-clone w102 --target w102.img --size 4G --from w101")],
}

ENVIRONMENT = [
    ("DSAS_INVENTORY", "The inventory file when --inventory is not given "
                       "(default /etc/dsas/cluster.yaml)."),
    ("DSAS_STATE_DIR", "The state directory of dsas-push, dsas-clone and dsas push "
                       "(default /var/lib/dsas)."),
]

FILES = [
    ("/etc/dsas/cluster.yaml", "The inventory: networks, hardware types, roles, hosts."),
    ("/var/lib/dsas/state.db", "Leases, discovered machines, boot events, push history "
                               "(sqlite)."),
    ("/var/lib/dsas/ssh/", "dsas-push's key (id_ed25519) and the trusted host keys "
                           "(known_hosts)."),
    ("/srv/dsas/boot/", "The boot tree: loaders, rendered files, the image store (images/)."),
]


@dataclass
class Page:
    name: str  # dsas-image-build
    path: str  # dsas image build
    command: click.Command
    parent: str | None  # page name of the group above


def esc(text: str) -> str:
    """Text for roff: backslashes and leading control characters made literal."""
    text = text.replace("\\", "\\e").replace("-", "\\-")  # \- : a minus, for copy and paste
    out = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def opt_esc(text: str) -> str:
    return esc(text)


# Help text computed on the machine that builds the pages, said in general terms.
MACHINE_SPECIFIC = [(re.compile(r"default \d+ on this machine"),
                     "default 8 per CPU, at least 4 and at most 32")]


def source_relative(value: str) -> str:
    """A default that points into the source tree (shown without this checkout's path)
    or depends on this machine (shown as the rule): the page is the same everywhere."""
    root = str(ROOT)
    if root in value:
        value = value.replace(root + "/", "").replace(root, ".")
    for pattern, general in MACHINE_SPECIFIC:
        value = pattern.sub(general, value)
    return value


def pages() -> list[Page]:
    out: list[Page] = []

    def walk(cmd: click.Command, path: str, parent: str | None) -> None:
        name = path.replace(" ", "-")
        out.append(Page(name, path, cmd, parent))
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd, info_name=path)
            for sub in cmd.list_commands(ctx):
                child = cmd.get_command(ctx, sub)
                if child is not None and not child.hidden:
                    walk(child, f"{path} {sub}", name)

    walk(cli, "dsas", None)
    from provision.cli.clone import cli as clone_cmd
    from provision.cli.push import push_cmd
    # `dsas push` (history) and the `dsas-push` program would share dsas-push.1: the
    # program keeps that name; the group's page is dsas-push-group.1.
    for p in out:
        if p.name == "dsas-push":
            p.name = "dsas-push-group"
    for p in out:
        if p.parent == "dsas-push":
            p.parent = "dsas-push-group"
    out.append(Page("dsas-push", "dsas-push", push_cmd, None))
    out.append(Page("dsas-clone", "dsas-clone", clone_cmd, None))
    return out


def summary_line(cmd: click.Command, path: str, lower: bool = True) -> str:
    """The first sentence of the help, without the program's name in front."""
    text = (cmd.help or cmd.short_help or "").strip()
    first = text.split("\n\n")[0].replace("\n", " ").strip()
    prog = path.split()[0]
    for lead in (f"{prog} -- ", f"{prog} - ", f"{prog}: "):
        if first.lower().startswith(lead):
            first = first[len(lead):]
    first = first.rstrip(".")
    if not lower:
        return first[:1].upper() + first[1:]
    return first[:1].lower() + first[1:] if first[:2] != first[:2].upper() else first


def description(cmd: click.Command) -> list[str]:
    """The help after its first paragraph: prose filled, \\b blocks verbatim."""
    paras = (cmd.help or "").strip().split("\n\n")
    body = paras[1:] if len(paras) > 1 else []
    out: list[str] = []
    for para in body:
        lines = para.split("\n")
        if lines[0].strip() == "\b":
            out += [".PP", ".nf", ".RS 4"]
            out += [esc(line.rstrip()) for line in _dedent(lines[1:])]
            out += [".RE", ".fi"]
        else:
            out += [".PP", esc(" ".join(line.strip() for line in lines))]
    return out


def _dedent(lines: list[str]) -> list[str]:
    indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
    return [x[indent:] for x in lines]


def options(cmd: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in cmd.get_params(ctx):
        if not isinstance(param, click.Option):
            continue
        rec = param.get_help_record(ctx)
        if rec is None:
            continue
        names, help_text = rec
        out += [".TP", "\\fB" + opt_esc(names).replace(", ", "\\fR, \\fB") + "\\fR"]
        out.append(esc(source_relative(help_text)) if help_text else "")
    return out


def examples(page: Page) -> list[tuple[str, str]]:
    if page.path in EXAMPLES:
        return EXAMPLES[page.path]
    found = []
    for para in (page.command.help or "").split("\n\n"):
        lines = para.split("\n")
        if lines[0].strip() == "\b":
            found += [x.strip().split("  ")[0] for x in lines[1:]
                      if x.strip().startswith(page.path)]
    if found:
        return [("", "\n".join(found))]
    return [("Every option, with its default:", f"{page.path} --help")]


def render(page: Page, all_pages: list[Page]) -> str:
    cmd = page.command
    ctx = click.Context(cmd, info_name=page.path)
    title = page.name.upper()
    out = [f'.TH "{title}" "1" "" "dsas {__version__}" "{MANUAL}"',
           ".SH NAME", f"{page.name.replace('-', chr(92) + '-')} \\- "
                       f"{esc(summary_line(cmd, page.path))}",
           ".SH SYNOPSIS", f".B {page.path}",
           esc(" ".join(cmd.collect_usage_pieces(ctx))),
           ".SH DESCRIPTION", ".PP", esc(summary_line(cmd, page.path, lower=False) + ".")]
    out += description(cmd)
    opts = options(cmd, ctx)
    if opts:
        out += [".SH OPTIONS", *opts]
    children = [p for p in all_pages if p.parent == page.name]
    if children:
        out.append(".SH COMMANDS")
        for child in children:
            out += [".TP", f"\\fB{esc(child.path.split()[-1])}\\fR",
                    f"{esc(summary_line(child.command, child.path))}. "
                    f"See \\fB{opt_esc(child.name)}\\fR(1)."]
    out.append(".SH EXAMPLES")
    for text, command in examples(page):
        if text:
            out += [".PP", esc(text)]
        out += [".PP", ".nf", ".RS 4", esc(command), ".RE", ".fi"]
    out += [".SH EXIT STATUS", "0 success, 1 failure (an invalid inventory, a host that "
            "failed), 2 a usage error."]
    out.append(".SH ENVIRONMENT")
    for var, text in ENVIRONMENT:
        out += [".TP", f"\\fB{var}\\fR", esc(text)]
    out.append(".SH FILES")
    for path, text in FILES:
        out += [".TP", f"\\fI{opt_esc(path)}\\fR", esc(text)]
    see = sorted({p.name for p in all_pages if p.name != page.name and (
        p.name == page.parent or p.parent == page.name or p.parent is None
        or (page.parent is not None and p.parent == page.parent))})
    out += [".SH SEE ALSO", ",\n".join(f"\\fB{opt_esc(name)}\\fR(1)" for name in see)]
    return "\n".join(out) + "\n"


def write(outdir: Path) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    all_pages = pages()
    names = [p.name for p in all_pages]
    if len(names) != len(set(names)):
        raise SystemExit(f"two commands want the same page: {sorted(names)}")
    written = []
    for page in sorted(all_pages, key=lambda p: p.name):
        path = outdir / f"{page.name}.1"
        path.write_text(render(page, all_pages))
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: manpages.py OUTDIR")
    for p in write(Path(sys.argv[1])):
        print(p)
