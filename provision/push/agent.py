"""dsas-push's node agent: a uftp update that costs the master no SSH login per node.

A node whose inventory says ``push: {multicast: true, agent: true}`` runs uftpd from
boot with ``push-agent`` (``boot-scripts/lib/push-agent``) as its post-receive hook.
For such a node, when the master's history says which release it has live (the
base its update is a delta against), an update goes with no SSH at all:

1. The session (``uftp_round.py``) carries, after the changed files, their sums and
   the fixup script, two more files: ``.dsas-order``, the shell script that does on
   the node what the SSH steps would do (``order_script``: prepare the incoming tree
   as hard links of the base, check every staged file against the sums, link them
   in, run the fixup, verify the tree against the manifest, switch), and
   ``.dsas-order.sig``, its SSH signature (``ssh-keygen -Y sign``, namespace
   ``dsas-push-order``) by dsas-push's own key.
2. On the node, the hook runs when the order arrives (it is the session's last file).
   It runs the order only when the signature is good by a key allowed to log in as
   root there (its ``authorized_keys``, lines without options): whoever may push by
   SSH may push this way, nobody else. An order applies only to a node whose live
   release is the order's base, and not after its ``NOT-AFTER`` time.
3. The node reports what the order printed over HTTP to a listener dsas-push runs
   for the push (``ReportListener``), signed with the node's SSH host key (namespace
   ``dsas-push-report``), with the push's nonce. The master takes a report only from
   the node's own address, signed by the host key dsas already trusts for it, for
   this push: a node's report is trusted only from that node.
4. A node that reports its switch is done. Any other (no report in ``wait``
   seconds, a report that is not verified, or one that says the order could not
   apply) goes on as before: its SSH login, rsync's completion, the verification
   and the switch. Nothing is ever switched unverified: the order's own commit step
   is the same verification the SSH path runs.

What the master spends per node is then uftp's registration of the node, one HTTP
request and one signature check (about a millisecond), instead of a login and
three steps (about 9 ms of CPU, and all of it in Python threads).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import logging
import secrets
import shlex
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from .. import proc
from ..observability.logsafe import safe
from ..sshtrust.sshconf import SshConfig
from .multicast import apply_script
from .release import Manifest, NodeLayout
from .remote import commit_script, parse_kv, prepare_script

log = logging.getLogger("provision.push.push")

ORDER_NAME = ".dsas-order"
SIG_NAME = ".dsas-order.sig"
ORDER_NS = "dsas-push-order"
REPORT_NS = "dsas-push-report"
MAGIC = b"DSAS-PUSH-REPORT 1\n"
ARMOR = b"-----BEGIN SSH SIGNATURE-----"
MAX_REPORT = 64 * 1024  # bytes of one report (the order's output is cut to 16 KiB)
ORDER_TTL = 3600  # s an order stays valid on the nodes (against a replay much later)
WAIT = 30.0  # s the master waits for the reports once the session is over


def order_script(lay: NodeLayout, rid: str, base: str, sums_digest: str, manifest: Manifest,
                 keep: int, nonce: str, url: str, not_after: int) -> str:
    """What a node's agent runs for this push (see the module docstring). Its first
    lines, read by the agent before it runs the script, say where to report and
    with which nonce. Its output is ``prepare_script``'s, ``apply_script``'s and the
    commit step's (``COMMITRC``, ``GOT``, ``LIVE``), or ``NOAGENT <why>``."""
    q = shlex.quote
    commit = commit_script(lay, rid, manifest, base, True) + "; " + _prune(keep)
    staging = f"{lay.releases}/.uftp-{rid}"
    return "\n".join([
        f"# DSAS-REPORT {url}",
        f"# DSAS-NONCE {nonce}",
        f"# DSAS-RID {rid}",
        f"TO={q(lay.live)}; R={q(lay.releases)}; ID={q(rid)}; BASE={q(base)}; "
        f"S={q(staging)}",
        'lock="$R/.agent-$ID"',
        f'if [ "$(date +%s)" -gt {not_after} ]; then echo "NOAGENT the order expired"; exit 0; fi',
        'l=$(readlink "$TO" 2>/dev/null) || l=',
        'if [ "${l##*/}" != "$BASE" ]; then '
        'echo "NOAGENT live is ${l##*/}, not the order\'s base $BASE"; exit 0; fi',
        'mkdir "$lock" 2>/dev/null || { echo "NOAGENT another agent applies $ID"; exit 0; }',
        "trap 'rm -rf \"$lock\"' EXIT",
        f"prep=$( ( {prepare_script(lay, rid, [base])} ) 2>&1 )",
        'printf "%s\\n" "$prep"',
        'case "$prep" in *"LINKED $BASE"*) ;; *) '
        'echo "NOAGENT the incoming tree is not linked from $BASE"; exit 0;; esac',
        f"( {apply_script(lay, rid, sums_digest, True, commit)} )",
        "",
    ])


def _prune(keep: int) -> str:
    """The releases beyond the newest ``keep`` (never the new one, nor the base), as
    ``remote.to_prune`` would choose them from the node's state."""
    if keep <= 0:
        return "true"
    return (f'n=0; for d in $(cd "$R" && ls -1 | grep -E "^[0-9]{{8}}-[0-9]{{6}}-[0-9]{{3}}-'
            f'[0-9a-f]{{4}}$" | sort -r); do n=$((n+1)); [ $n -gt {keep} ] || continue; '
            '[ "$d" = "$ID" ] || [ "$d" = "$BASE" ] || { rm -rf -- "$R/$d" && '
            'echo "PRUNED $d"; }; done; true')


def sign_order(cfg: SshConfig, path: Path) -> Path:
    """Sign ``path`` with dsas-push's key; returns the signature file."""
    proc.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(cfg.key), "-n", ORDER_NS, str(path)],
             timeout=30)
    return path.with_name(path.name + ".sig")


def new_nonce() -> str:
    return secrets.token_hex(16)


def local_address(peer: str) -> str:
    """The address this machine reaches ``peer`` from (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((peer, 9))
        return str(s.getsockname()[0])


# -- signatures (the SSHSIG format of OpenSSH's PROTOCOL.sshsig) -----------------

class SigError(ValueError):
    """A signature that does not parse or does not verify."""


def _string(buf: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(buf):
        raise SigError("truncated")
    (n,) = struct.unpack(">I", buf[at:at + 4])
    if at + 4 + n > len(buf):
        raise SigError("truncated")
    return buf[at + 4:at + 4 + n], at + 4 + n


def _ssh_string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def verify_sshsig(message: bytes, armored: bytes, namespace: str,
                  trusted: list[tuple[str, str]]) -> str:
    """Check ``armored`` (``ssh-keygen -Y sign`` output) over ``message``, made in
    ``namespace`` by one of ``trusted`` ((type, base64) key pairs). Returns the key's
    type; raises SigError otherwise."""
    lines = armored.strip().splitlines()
    if len(lines) < 3 or lines[0].strip() != ARMOR or not lines[-1].startswith(b"-----END"):
        raise SigError("not an SSH signature")
    try:
        blob = base64.b64decode(b"".join(line.strip() for line in lines[1:-1]), validate=True)
    except ValueError:
        raise SigError("bad base64") from None
    if blob[:6] != b"SSHSIG" or blob[6:10] != b"\0\0\0\1":
        raise SigError("not an SSHSIG v1 blob")
    at = 10
    pub, at = _string(blob, at)
    ns, at = _string(blob, at)
    reserved, at = _string(blob, at)
    halg, at = _string(blob, at)
    sig, at = _string(blob, at)
    if ns.decode(errors="replace") != namespace:
        raise SigError(f"made for {ns.decode(errors='replace')!r}, not {namespace!r}")
    digests = {b"sha512": hashlib.sha512, b"sha256": hashlib.sha256}
    if halg not in digests:
        raise SigError(f"hash {halg.decode(errors='replace')!r}")
    for ktype, b64 in trusted:
        if base64.b64decode(b64) != pub:
            continue
        key = paramiko.PKey.from_type_string(ktype, pub)
        data = (b"SSHSIG" + _ssh_string(ns) + _ssh_string(reserved) + _ssh_string(halg)
                + _ssh_string(digests[halg](message).digest()))
        try:
            ok = key.verify_ssh_sig(data, paramiko.Message(sig))
        except Exception:  # noqa: BLE001 - any parse failure is a bad signature
            ok = False
        if not ok:
            raise SigError("signature does not verify")
        return ktype
    raise SigError("made by a key not trusted for this host")


# -- the reports ------------------------------------------------------------------

@dataclass
class Report:
    """What one node's agent said."""

    ok: bool  # its order verified and switched the release
    why: str  # one line, when not ok
    kv: dict[str, list[str]]


def judge(kv: dict[str, list[str]], rid: str) -> Report:
    """Whether the order's output says the node is on ``rid``, verified. ``why`` is
    the node's own text, escaped for the log."""
    report = _judge(kv, rid)
    report.why = safe(report.why)
    return report


def _judge(kv: dict[str, list[str]], rid: str) -> Report:
    if "NOAGENT" in kv:
        return Report(False, kv["NOAGENT"][0][:200], kv)
    if "NOSUMS" in kv:
        return Report(False, "the staged sums are not the master's", kv)
    if "NOFIX" in kv:
        return Report(False, f"the fixup failed: {kv['NOFIX'][0][:160]}", kv)
    missed = (kv.get("MISSED") or ["?"])[0]
    if missed != "0":
        return Report(False, f"{missed} staged files missing or wrong", kv)
    rc = (kv.get("COMMITRC") or ["?"])[0]
    if rc == "4":
        return Report(False, f"verify failed: node has {(kv.get('GOT') or ['?'])[0]!r}", kv)
    if rc != "0" or (kv.get("LIVE") or [""])[-1] != rid:
        return Report(False, f"the commit step exited {rc}", kv)
    return Report(True, "", kv)


class ReportListener:
    """The HTTP listener the nodes' agents report to, for one push.

    Bound to the master's address towards the nodes, on a port of its own. A request
    is read only from an expected node's address (others are closed unread), up to
    ``MAX_REPORT`` bytes, in at most 5 s; at most 64 at a time. A report counts only
    when its signature verifies with the host key dsas trusts for that address, in
    the report namespace, with this push's nonce and release.
    """

    def __init__(self, bind: str, expected: dict[str, tuple[str, list[tuple[str, str]]]],
                 rid: str, nonce: str):
        """``expected``: address -> (host, its trusted (type, base64) keys)."""
        self.rid, self.nonce, self.expected = rid, nonce, expected
        self.reports: dict[str, Report] = {}
        self.refused = 0
        self._cond = threading.Condition()
        self._slots = threading.BoundedSemaphore(64)
        listener = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5

            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                code = listener._take(self.client_address[0], self)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                return client_address[0] in listener.expected and \
                    listener._slots.acquire(blocking=False)

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    listener._slots.release()

        self._server = Server((bind, 0), Handler)
        self.url = f"http://{bind}:{self._server.server_address[1]}/report"
        # shutdown() waits for the loop to look: at the default 0.5 s, the push's end did
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                         name="dsas-push-reports", daemon=True)
        self._thread.start()

    def _take(self, address: str, req: http.server.BaseHTTPRequestHandler) -> int:
        host, keys = self.expected[address]
        try:
            length = int(req.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_REPORT:
            return self._refuse(host, "no length or too long", 413)
        body = req.rfile.read(length)
        cut = body.find(ARMOR)
        if cut < 0 or not body.startswith(MAGIC):
            return self._refuse(host, "not a report", 400)
        message, armored = body[:cut], body[cut:]
        try:
            verify_sshsig(message, armored, REPORT_NS, keys)
        except SigError as e:
            return self._refuse(host, f"signature: {e}", 403)
        kv = parse_kv(message.decode("utf-8", errors="replace"))
        if (kv.get("NONCE") or [""])[0] != self.nonce or (kv.get("RID") or [""])[0] != self.rid:
            return self._refuse(host, "for another push", 403)
        report = judge(kv, self.rid)
        with self._cond:
            self.reports.setdefault(host, report)
            self._cond.notify_all()
        return 204

    def _refuse(self, host: str, why: str, code: int) -> int:
        log.warning("host=%s agent report refused: %s", host, why)
        with self._cond:
            self.refused += 1
        return code

    def wait(self, host: str, deadline: float) -> Report | None:
        """``host``'s report, waiting until ``deadline`` (monotonic) at most."""
        with self._cond:
            while host not in self.reports:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 1.0))
            return self.reports[host]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
