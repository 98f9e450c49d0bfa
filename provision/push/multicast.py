"""dsas-push's multicast transfer: the changed files go once, by ``uftp``, to every node.

The release semantics stay rsync's (``push.py``): a node's new release is still
``<to>.releases/.incoming-<id>``, completed by rsync, verified against the
manifest and switched by rename. uftp only brings the bulk of the bytes first:

1. ``start_script``: over the node's SSH session, start ``uftpd`` (if the node
   has it) into a fresh staging directory ``<to>.releases/.uftp-<id>``, on the
   push's group and port, bound to the node's address, encrypted sessions only.
2. ``uftp_argv``: the master sends the regular files that differ from the base
   release the nodes pre-linked (all of them for a first push) plus a list of
   their SHA-256 sums, in one session to all these nodes (``-H``: only them),
   TTL 1, on the given interface. The small files (up to ``BUNDLE_MAX_FILE``) go
   as one cpio archive in the session, the bundle, so what uftp and the nodes spend per file
   is spent once. ``parse_status`` reads who got what.
3. ``apply_script``: over SSH again, stop uftpd, check the sums list against the
   digest the master sends over SSH (the authenticated channel), check the bundle
   against it and unpack it, check every other staged file against it (a file
   that fails is dropped, a bad bundle is not unpacked: rsync sends them), then
   hard-link the staged files into the incoming tree, replacing (never writing
   through) the links to the base release.

4. For a node pre-linked from the session's base that got everything, the session's
   ``fixup_script`` (checked like the staged files) then does rsync's pass over the
   delta (removals, directories, symlinks, owners, modes, times): the node is
   verified and switched with no rsync at all (if that fails, rsync's pass repairs).

Otherwise the normal rsync pass runs: for a node that got everything it only sets
modes and directory times (uftp keeps mtimes to the second, not modes), with
``--modify-window=0``; for a node that missed data, the usual full-precision
pass, which sends what is missing. Integrity does not rest on uftp: the staged
bytes are checked against SHA-256 sums that came over SSH.
"""

from __future__ import annotations

import calendar
import hashlib
import ipaddress
import logging
import os
import shlex
import shutil
import stat
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import proc
from ..imaging import cpio
from .prelink import Listing
from .release import NodeLayout

log = logging.getLogger(__name__)

DEFAULT_GROUP = "239.255.77.1"  # administratively scoped (RFC 2365); TTL 1 keeps it on the link
DEFAULT_PORT = 17044
DEFAULT_RATE_KBPS = 400_000
# uftp's data bytes per packet: its default (1300) leaves ~100 bytes unused in a
# 1500-byte MTU; with this cipher its headers take ~87 (1420 was the largest that did
# not fragment in the lab), so 1400 keeps 20 to spare and sends 7% fewer packets
DEFAULT_BLOCK = 1400
DEFAULT_MIN_NODES = 8  # --transfer auto: uftp from this many nodes up (rsync below)
SUMS_NAME = ".dsas-uftp-sums"
# The small changed files go in one cpio archive, sent as one file of the session:
# uftp's cost per file (its announce and every receiver's status for it, and a boot
# uftpd's post-receive hook, forked once per file) then does not grow with the count.
BUNDLE_PREFIX = ".dsas-uftp-bundle-"  # <prefix><files in it>.cpio (newc)
BUNDLE_MAX_FILE = 1 << 20  # bytes: larger files go as themselves
# uftp's symmetric cipher and key exchange: AES-GCM authenticates every packet of the
# session, ECDH gives each session its own key. Confidentiality against a passive
# listener on the segment; integrity of what is kept comes from the SHA-256 sums.
CIPHER = ["-Y", "aes256-gcm", "-e", "ecdh_ecdsa"]
CLIENT_KEY = "ec:prime256v1"


@dataclass(frozen=True)
class McastConfig:
    """Where and how fast uftp multicasts a push."""

    interface: str | None = None  # master side: name or address (uftp -I)
    group: str = DEFAULT_GROUP
    port: int = DEFAULT_PORT
    rate_kbps: int = DEFAULT_RATE_KBPS
    ttl: int = 1
    block: int = DEFAULT_BLOCK  # uftp -b
    agent_wait: float = 30.0  # s the node agents have to report, after the session (agent.py)

    def __post_init__(self) -> None:
        addr = ipaddress.ip_address(self.group)
        if not addr.is_multicast or addr.version != 4:
            raise ValueError(f"uftp group {self.group} is not an IPv4 multicast address")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"uftp port {self.port} out of range")
        if not 1 <= self.ttl <= 255:
            raise ValueError(f"TTL {self.ttl} out of range")
        if not 512 <= self.block <= 8800:
            raise ValueError(f"uftp block size {self.block} out of range (512-8800)")


def bundle_name(files: int) -> str:
    return f"{BUNDLE_PREFIX}{files}.cpio"


def available() -> bool:
    """Whether this master can send (``uftp`` on PATH)."""
    return shutil.which("uftp") is not None


def client_uid(address: str) -> str:
    """A node's uftp id: its IPv4 address as 8 hex digits (uftpd's own default)."""
    return f"0x{int(ipaddress.IPv4Address(address)):08X}"


def staging(lay: NodeLayout, rid: str) -> str:
    return f"{lay.releases}/.uftp-{rid}"


def sendable(name: str) -> bool:
    """Names uftp and the node's shell loop carry unambiguously; the others go by rsync."""
    return bool(name) and name == name.strip() and not any(c in name for c in "\n\r\\") \
        and name not in (SUMS_NAME, FIXUP_NAME, ".dsas-order", ".dsas-order.sig") \
        and not name.startswith(("/", BUNDLE_PREFIX))


def regular_files(listing: Listing, names: Iterable[str] | None = None) -> list[str]:
    """The regular files of ``listing`` (of ``names`` only, if given) uftp can send."""
    pick = listing.keys() if names is None else names
    return sorted(n for n in pick if n in listing and listing[n][0] == "f" and sendable(n))


BOOT_PID = "/run/dsas/uftpd.pid"  # dsas-init's uftpd (PUSH_MULTICAST=1)
BOOT_ROOT = "/run/dsas/uftpd.root"  # where it receives (UFTP_ROOT)


def start_script(lay: NodeLayout, rid: str, cfg: McastConfig, address: str) -> str:
    """Start uftpd for this push on the node: ``UFTPD <pid>``, ``NOUFTPD`` if the node has
    none (rsync then), ``ERR ...`` if it would not start. Stale ones of older pushes
    (their pid files) are stopped first. A node whose dsas-init runs uftpd (the
    inventory's ``push: {multicast: true}``) receives with that one (``UFTPD boot``)
    when the staging directory is under its root; the session names the staging
    directory (``uftp -D``), so both kinds put the files in the same place."""
    s = staging(lay, rid)
    q = shlex.quote
    argv = ["uftpd", "-I", address, "-M", cfg.group, "-p", str(cfg.port), "-D", s,
            "-F", f"{s}.status", "-L", f"{s}.log", "-P", f"{s}.pid", "-U", client_uid(address),
            "-E", "-K", CLIENT_KEY, "-q", "-x", "1"]
    return (
        f"R={q(lay.releases)}; S={q(s)}; "
        'u=$(command -v uftpd 2>/dev/null); '
        '[ -f "$u" ] && [ -x "$u" ] || { echo NOUFTPD 1; exit 0; }; '
        '[ -d "$R" ] || { echo "ERR $R missing"; exit 3; }; '
        + _stop_fragment('"$R"/.uftp-*.pid') +
        'rm -rf "$R"/.uftp-*; '
        f'b=$(cat {BOOT_PID} 2>/dev/null); '
        'case "$b" in *[!0-9]*|"") b=;; esac; '
        'if [ -n "$b" ] && [ "$(cat /proc/$b/comm 2>/dev/null)" = uftpd ]; then '
        f'  root=$(cat {BOOT_ROOT} 2>/dev/null); '
        '  case "$S" in "${root%/}"/?*) mkdir "$S" || exit 3; echo "UFTPD boot"; exit 0;; esac; '
        '  echo "NOUFTPD the boot uftpd receives only under ${root:-?}"; exit 0; '
        'fi; '
        'mkdir "$S" || exit 3; '
        f"{' '.join(q(a) for a in argv)} </dev/null >/dev/null 2>&1 || "
        '{ echo "ERR uftpd exited $?"; exit 3; }; '
        'i=0; while [ ! -s "$S.pid" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; '
        '[ -s "$S.pid" ] || { echo "ERR uftpd wrote no pid file"; exit 3; }; '
        'echo "UFTPD $(cat "$S.pid")"'
    )


def _stop_fragment(pidfiles: str) -> str:
    """Stop the uftpd of each pid file (only if that pid is a uftpd), bounded wait."""
    return (
        f'for pf in {pidfiles}; do [ -s "$pf" ] || continue; p=$(cat "$pf"); '
        'case "$p" in *[!0-9]*|"") continue;; esac; '
        'if [ "$(cat /proc/$p/comm 2>/dev/null)" = uftpd ]; then kill "$p" 2>/dev/null; '
        # stopped once it is a zombie (field 3 of stat: its comm, uftpd, has no space):
        # its reaping is its parent's business (init's, which may take a second)
        'i=0; while s=$(cut -d" " -f3 /proc/$p/stat 2>/dev/null) && [ "$s" != Z ] '
        '&& [ $i -lt 100 ]; do sleep 0.02; i=$((i+1)); done; '
        '[ -n "$s" ] && [ "$s" != Z ] && kill -9 "$p" 2>/dev/null; fi; rm -f "$pf"; done; '
    )


def apply_script(lay: NodeLayout, rid: str, sums_digest: str | None,
                 fixup: bool = False, then: str | None = None) -> str:
    """Stop uftpd, check the staged files, link them into the incoming tree.

    Prints ``STAGED <n>`` (files kept, the fixup script counted), ``MISSED <n>``
    (listed but absent or wrong: dropped), or ``NOSUMS`` when the sums list is missing
    or not the master's (then nothing staged is used). ``sums_digest`` None: stop and
    clean up only. ``fixup``: the incoming tree is hard links of the session's base;
    when nothing was missed and the session carried ``fixup_script``'s script (checked
    with the others), it runs in the tree: ``FIXED 1`` when it did all of rsync's pass,
    ``NOFIX <why>`` if it failed (the rsync pass repairs the tree then). ``then``: a
    script (the commit step) run in a subshell once the fixup did its work, its exit
    status printed as ``COMMITRC <n>``: one round trip for both."""
    s = staging(lay, rid)
    q = shlex.quote
    head = (f"R={q(lay.releases)}; S={q(s)}; ID={q(rid)}; "
            + _stop_fragment('"$S.pid"'))
    clean = ('cd /; rm -rf "$S" "$S".status "$S".log "$S".sums "$S".fixup "$S".fixerr '
             '"$S".bsum "$S".fsums; ')
    fix = after = ""
    if fixup:
        fix = ('fixed=; if [ $bad -eq 0 ] && [ -f "$S.fixup" ]; then '
               'if ( cd "$R/.incoming-$ID" && sh "$S.fixup" ) 2>"$S.fixerr"; then fixed=1; '
               'else echo "NOFIX $(tail -n 1 "$S.fixerr" | tr -d "\\r")"; fi; fi; ')
        if then:
            after = f'if [ "$fixed" = 1 ]; then ( {then} ); echo "COMMITRC $?"; fi; '
    if sums_digest is None:
        return head + clean + "true"
    return head + (
        f'cd "$S" 2>/dev/null || {{ echo NOSUMS 1; {clean} exit 0; }}; '
        f'if [ ! -f {SUMS_NAME} ] || [ "$(sha256sum < {SUMS_NAME})" != {q(sums_digest + "  -")} ]; '
        f'then echo NOSUMS 1; {clean} exit 0; fi; '
        f'mv {SUMS_NAME} "$S.sums"; rm -f {ORDER_FILES}; '
        # the bundle's line, first in the sums (checked above), says how many of the
        # lines after it are its files: unpacked only if its bytes are the master's,
        # they are then not read again (a file that came by itself is checked)
        'b=$(head -n 1 "$S.sums" | cut -c 67-); t=0; '
        f'case "$b" in {BUNDLE_PREFIX}[0-9]*.cpio) '
        f'k=${{b#{BUNDLE_PREFIX}}}; k=${{k%.cpio}}; case "$k" in *[!0-9]*) k=0;; esac; '
        'head -n 1 "$S.sums" > "$S.bsum"; '
        'if ! command -v cpio >/dev/null 2>&1; then echo NOCPIO 1; '
        'elif [ "$k" -gt 0 ] && [ -f "$b" ] && sha256sum -c --quiet "$S.bsum" >/dev/null 2>&1 '
        '&& ( umask 022; cpio -i -d -m -u < "$b" ) >/dev/null 2>&1; then t=$k; fi; '
        'sed "1,$((t + 1))d" "$S.sums" > "$S.fsums"; mv -f "$S.fsums" "$S.sums"; '
        'rm -f -- "$b" "$S.bsum";; esac; '
        'n=$(( $(wc -l < "$S.sums") + t )); bad=0; '
        'sha256sum -c --quiet "$S.sums" 2>/dev/null > "$S.bad"; '
        'while IFS= read -r line; do f=${line%: *}; rm -f -- "$f"; bad=$((bad+1)); '
        'done < "$S.bad"; rm -f "$S.bad"; '
        f'if [ -f {FIXUP_NAME} ]; then mv {FIXUP_NAME} "$S.fixup"; fi; '
        # Anything unlisted (nothing should be) makes the verification fail: full rsync.
        'set -e; cp -a -l --remove-destination . "$R/.incoming-$ID/"; set +e; '
        'echo "STAGED $((n-bad))"; echo "MISSED $bad"; ' + fix + clean + after + "true"
    )


FIXUP_NAME = ".dsas-uftp-fixup"
# the node agent's order and its signature (agent.py): no part of the tree
ORDER_FILES = ".dsas-order .dsas-order.sig"
_EXEC = {"x": (1, 0), "-": (0, 0), "s": (1, 1), "S": (0, 1), "t": (1, 1), "T": (0, 1)}


def _octal(perms: str) -> str | None:
    """rsync's ``%B`` (``rwsr-xr-x``) as chmod's octal, or None if it is not one."""
    if len(perms) != 9:
        return None
    special, digits = 0, ""
    for i, high in enumerate((4, 2, 1)):  # user (setuid), group (setgid), other (sticky)
        r, w, x = perms[3 * i], perms[3 * i + 1], perms[3 * i + 2]
        if r not in "r-" or w not in "w-" or x not in _EXEC or \
                (x in "sS" and i == 2) or (x in "tT" and i != 2):
            return None
        digits += str(4 * (r == "r") + 2 * (w == "w") + _EXEC[x][0])
        special += high * _EXEC[x][1]
    return f"{special}{digits}"


def _epoch(mtime: str) -> str | None:
    """The listing's UTC ``YYYY/MM/DD-HH:MM:SS[.ns]`` as touch's ``@seconds.ns``."""
    head, _, ns = mtime.partition(".")
    try:
        t = time.strptime(head, "%Y/%m/%d-%H:%M:%S")
    except ValueError:
        return None
    if ns and not ns.isdigit():
        return None
    return f"@{calendar.timegm(t)}" + (f".{ns}" if ns else "")


class _Unsupported(Exception):
    """An entry the fixup script does not handle: rsync's pass does the node."""


class _Fixup:
    """The lines of ``fixup_script``, built one delta name at a time."""

    def __init__(self, old: Listing, new: Listing):
        self.old, self.new = old, new
        self.rm: list[str] = []
        self.make: list[str] = []
        self.owners: dict[str, list[str]] = {}  # uid:gid -> names
        self.modes: dict[str, list[str]] = {}  # octal -> names
        self.times: dict[str, str] = {}  # name -> its mtime in the new tree, for touch -d

    @staticmethod
    def _get(listing: Listing, name: str) -> tuple[str, ...] | None:
        return listing.get("./" if name == "." else name) or listing.get(name + "/")

    def _time(self, name: str) -> None:
        cur = self._get(self.new, name)
        if cur is not None and name not in self.times:
            self.times[name] = self._when(name, cur[5])

    def _parents(self, name: str) -> None:
        """rsync's implied directories: linking a staged file moved their times."""
        parts = name.split("/")[:-1]
        for i in range(len(parts)):
            self._time("/".join(parts[:i + 1]))
        if name != ".":
            self._time(".")

    def add(self, name: str) -> None:
        q = shlex.quote
        if name != "." and not sendable(name):
            raise _Unsupported(name)
        cur, prev = self._get(self.new, name), self._get(self.old, name)
        if cur is None:  # gone
            self.rm.append(f"rm -rf -- {q(name)}")
            self._parents(name)
            return
        kind, perms, uid, gid, _size, mtime, link = cur
        when = self._when(name, mtime)
        if not (uid.isdigit() and gid.isdigit()):
            raise _Unsupported(name)
        self._create(name, kind, link, prev[0] if prev else None)
        # as rsync -a: owners only as root (another user's rsync leaves them its own)
        self.owners.setdefault(f"{uid}:{gid}", []).append(name)
        if kind != "L":
            octal = _octal(perms)
            if octal is None:
                raise _Unsupported(name)
            self.modes.setdefault(octal, []).append(name)
        self.times[name] = when
        self._parents(name)

    @staticmethod
    def _when(name: str, mtime: str) -> str:
        when = _epoch(mtime)
        if when is None:
            raise _Unsupported(name)
        return when

    def _create(self, name: str, kind: str, link: str, was: str | None) -> None:
        q = shlex.quote
        if kind == "d":
            if was is not None and was != "d":
                self.rm.append(f"rm -rf -- {q(name)}")
            if name != ".":
                self.make.append(f"mkdir -p -- {q(name)}")
        elif kind == "L" and link.startswith(" -> "):
            self.rm.append(f"rm -rf -- {q(name)}")
            self.make.append(f"ln -s -- {q(link[4:])} {q(name)}")
        elif kind != "f" or (was is not None and was != "f"):
            raise _Unsupported(name)  # a device or special; or a file where another kind was

    def script(self) -> str:
        """Owners, then modes (a chown clears setuid bits), then times, each one command
        per value for all the names that have it (a node forks per command, not per
        name). Setting an entry's owner, mode or times does not touch its directory's."""
        deepest_first = sorted(self.times, key=lambda n: (-n.count("/") - (n != "."), n))
        by_time: dict[str, list[str]] = {}
        for n in deepest_first:
            by_time.setdefault(self.times[n], []).append(n)
        return "\n".join(["set -e", 'root=; [ "$(id -u)" -ne 0 ] || root=1', *self.rm,
                          *self.make,
                          *_each('[ -z "$root" ] || chown -h', self.owners),
                          *_each("chmod", self.modes),
                          *_each("touch -h -d", by_time), "echo FIXED 1", ""])


def _each(command: str, names_by_value: dict[str, list[str]], per_line: int = 200) -> list[str]:
    """``command value -- names...``, at most ``per_line`` names a line (argv stays short)."""
    q = shlex.quote
    return [f"{command} {value} -- " + " ".join(q(n) for n in names[i:i + per_line])
            for value, names in names_by_value.items()
            for i in range(0, len(names), per_line)]


def fixup_script(old: Listing, new: Listing, delta: Sequence[str]) -> str | None:
    """What rsync's pass over ``delta`` (``delta_names(old, new)``) would do on a node
    whose incoming tree is hard links of ``old`` with every changed regular file
    already staged by uftp in place (new inodes): remove what went, make the
    directories and symlinks, set owners and modes of the changed entries, then the
    times of those and of their parents' directories, deepest first (linking the
    staged files moved them). A POSIX shell script run with ``set -e`` in the
    incoming tree; it comes in the uftp session, checked by the sums list like
    every staged file. None when an entry is of a kind or form it does not handle
    (devices, specials, names uftp does not carry): rsync's pass then."""
    fix = _Fixup(old, new)
    try:
        for name in delta:
            fix.add(name)
    except _Unsupported as e:
        log.info("uftp: no fixup script (%r): rsync's pass sets the attributes", str(e)[:80])
        return None
    return fix.script()


def sums_file(src: str, names: Sequence[str], path: Path,
              extra: Sequence[tuple[str, Path]] = (), bundle: Path | None = None,
              bundled: Collection[str] = ()) -> str:
    """Write ``sha256sum -c`` lines for ``names`` (relative to ``src``), then for
    ``extra`` (the name in the session, the file here), to ``path``; return the
    SHA-256 of that file. Each changed byte is read once, on the master. The files
    of ``bundled`` (some of ``names``) go, as they are read, into ``bundle``, a newc
    cpio archive (about 120 bytes a file; names relative, root-owned, with their modes
    and mtimes; GNU's and busybox's cpio read it). The bundle's own
    line comes first, then its files' lines, then the others': ``apply_script`` checks
    the bundle before it unpacks it, and then skips its files' lines."""
    lines: list[bytes] = []
    inner: list[bytes] = []  # the bundle's files' lines
    out = open(bundle, "wb") if bundle is not None and bundled else None  # noqa: SIM115
    th = hashlib.sha256()
    try:
        for name, local in [*((n, Path(src, n)) for n in names), *extra]:
            fh = hashlib.sha256()
            into = lines
            if out is not None and name in bundled:
                with open(local, "rb") as f:
                    st = os.fstat(f.fileno())
                    data = f.read(BUNDLE_MAX_FILE + 1)
                fh.update(data)
                member = cpio.member(cpio.CpioEntry(name, stat.S_IFREG | (st.st_mode & 0o7777),
                                                    data, mtime=int(st.st_mtime)), len(inner) + 1)
                th.update(member)
                out.write(member)
                into = inner
            else:
                with open(local, "rb") as f:
                    while chunk := f.read(1 << 20):
                        fh.update(chunk)
            into.append(f"{fh.hexdigest()}  {name}\n".encode("utf-8", "surrogateescape"))
        if out is not None:
            end = cpio.trailer()
            th.update(end)
            out.write(end)
    finally:
        if out is not None:
            out.close()
    if out is not None and bundle is not None:
        lines[:0] = [f"{th.hexdigest()}  {bundle.name}\n".encode(), *inner]
    text = b"".join(lines)
    path.write_bytes(text)
    return hashlib.sha256(text).hexdigest()


def uftp_argv(cfg: McastConfig, src: str, list_file: Path, clients: Sequence[str],
              status_file: Path, log_file: Path, dest: str | None = None) -> list[str]:
    """One session: the files of ``list_file`` (absolute paths under ``src`` and the sums
    list), names relative to ``src`` (``-E``), to ``clients`` only; into ``dest`` (the
    nodes' staging directory, absolute: ``-D``) when given."""
    argv = ["uftp", "-M", cfg.group, "-P", cfg.group, "-p", str(cfg.port), "-t", str(cfg.ttl),
            "-R", str(cfg.rate_kbps), "-b", str(cfg.block), *CIPHER, "-H", ",".join(clients),
            "-S", str(status_file), "-L", str(log_file), "-x", "1",
            # short announce and round-trip bounds: a node that does not answer is
            # dropped in about a second, not after uftp's default of ~10 s
            "-r", "0.05:0.01:1", "-s", "10",
            "-E", ",".join([src.rstrip("/") + "/", str(list_file.parent) + "/"]),
            "-i", str(list_file)]
    if dest:
        argv[-2:-2] = ["-D", dest]
    if cfg.interface:
        argv[1:1] = ["-I", cfg.interface]
    return argv


@dataclass
class SessionResult:
    """What one uftp session did."""

    returncode: int
    seconds: float
    files: int
    bytes: int  # file data in the session (sent once, whatever the node count)
    ok: set[str] = field(default_factory=set)  # clients that got every file
    failed: dict[str, str] = field(default_factory=dict)  # client -> why


def parse_status(text: str, clients: Sequence[str], files: int) -> tuple[set[str], dict[str, str]]:
    """Who got all ``files`` (RESULT copy/overwrite), from uftp's ``-S`` file."""
    connected: dict[str, bool] = {}
    got: dict[str, int] = {}
    bad: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(";")
        if parts[0] == "CONNECT" and len(parts) >= 3:
            connected[parts[2].upper()] = parts[1] == "success"
        elif parts[0] == "RESULT" and len(parts) >= 5:
            who = parts[1].upper()
            if parts[4] in ("copy", "overwrite"):
                got[who] = got.get(who, 0) + 1
            else:
                bad.setdefault(who, f"{parts[4]} {parts[2][:80]}")
    ok, failed = set(), {}
    for c in clients:
        key = c.upper()
        if not connected.get(key):
            failed[c] = "did not register"
        elif got.get(key, 0) < files:
            failed[c] = bad.get(key, f"got {got.get(key, 0)} of {files} files")
        else:
            ok.add(c)
    return ok, failed


def send(cfg: McastConfig, src: str, names: Sequence[str], clients: Sequence[str],
         workdir: Path, tag: str, timeout: float = 3600,
         dest: str | None = None, fixup: str | None = None,
         after: Callable[[str, Path], list[Path]] | None = None) -> tuple[SessionResult, str]:
    """Send ``names`` (relative to ``src``) and their sums list in one uftp session,
    with ``fixup`` (``fixup_script``'s text) if given, listed in the sums too.
    ``after(digest, workdir)``: files made once the sums' digest is known, sent last,
    in that order, outside the sums (the node agent's signature and order, agent.py).
    Returns the result and the sums list's digest (what the nodes check it against)."""
    wd = workdir / f"uftp-{tag}"
    wd.mkdir()
    extra: list[tuple[str, Path]] = []
    if fixup is not None:
        (wd / FIXUP_NAME).write_text(fixup, encoding="utf-8", errors="surrogateescape")
        extra.append((FIXUP_NAME, wd / FIXUP_NAME))
    sums = wd / SUMS_NAME
    sizes = {n: os.lstat(os.path.join(src, n)).st_size for n in names}
    small = [n for n in names if sizes[n] <= BUNDLE_MAX_FILE]
    bundled = set(small) if len(small) > 1 else set()
    bundle = wd / bundle_name(len(bundled))
    digest = sums_file(src, names, sums, extra, bundle, bundled)
    size = sum(sizes.values())
    list_file = wd / "files.list"
    base = os.path.abspath(src)
    last = after(digest, wd) if after is not None else []
    alone = [n for n in names if n not in bundled]
    first = [bundle] if bundled else []
    list_file.write_bytes(b"".join(os.fsencode(str(p)) + b"\n" for p in first)
                          + b"".join(os.fsencode(os.path.join(base, n)) + b"\n" for n in alone)
                          + b"".join(os.fsencode(str(p)) + b"\n" for _, p in extra)
                          + os.fsencode(str(sums)) + b"\n"
                          + b"".join(os.fsencode(str(p)) + b"\n" for p in last))
    status, logf = wd / "status", wd / "uftp.log"
    argv = uftp_argv(cfg, base, list_file, clients, status, logf, dest)
    t0 = time.monotonic()
    try:  # the status file says which nodes are complete, whatever uftp's exit
        rc = proc.run(argv, timeout=timeout, text=False, check=False).returncode
    except proc.CommandError as e:
        log.warning("uftp session %s: %s", tag, e)
        rc = -1
    secs = time.monotonic() - t0
    text = status.read_text(errors="replace") if status.exists() else ""
    ok, failed = parse_status(text, clients,
                              len(first) + len(alone) + len(extra) + 1 + len(last))
    log.info("uftp session %s: %d files, %d bytes, %d/%d nodes complete in %.2f s (rc %s)",
             tag, len(names), size, len(ok), len(clients), secs, rc)
    for c, why in failed.items():
        log.warning("uftp session %s: %s incomplete (%s): rsync completes it", tag, c, why)
    return SessionResult(rc, secs, len(names), size, ok, failed), digest
