"""The master pair's mirror (issue 18), between two real `dsas serve --master` processes
in their namespaces: what is written on the active master (an image version, a boot
file, dsas-push's known_hosts, an inventory edit) reaches the standby verified, and its
serve reloads the mirrored inventory; a standby cut off from the active takes the VIP
with a stale mirror, and both its log and `dsas master status` say so until the link
is back and the mirror caught up."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from lab.testing import require_tool, wait_for
from tests.support.master_lab import DSAS, Master, Pair, up

W2 = '  w2: {role: web, macs: ["52:54:00:00:01:02"], addresses: {lan: 198.18.0.12}}\n'


def _files(m: Master) -> dict[str, str]:
    """Every mirrored file of a master, as name -> sha256 (symlinks as their target)."""
    out = {"inventory": _sha(m.inventory)}
    kh = m.state / "ssh" / "known_hosts"
    if kh.exists():
        out["known_hosts"] = _sha(kh)
    boot = m.dir / "boot"
    for p in sorted(boot.rglob("*")):
        rel = p.relative_to(boot).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = _sha(p)
    return out


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _status(m: Master) -> tuple[int, dict[str, Any], str]:
    base = [DSAS, "master", "status", "--inventory", str(m.inventory), "--state-dir",
            str(m.state), "--master", m.name]
    doc = subprocess.run(m.ns.cmd([*base, "--json"]), capture_output=True, text=True,
                         timeout=60)
    text = subprocess.run(m.ns.cmd(base), capture_output=True, text=True, timeout=60)
    return doc.returncode, json.loads(doc.stdout), text.stdout


def _mine(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(dict(m.get("mirror") or {}) for m in doc["masters"] if m["name"] == name)


def _publish(m: Master, version: str, size: int) -> None:
    img = m.dir / "boot" / "images" / "base" / version
    img.mkdir(parents=True)
    (img / "vmlinuz").write_bytes(os.urandom(size))
    (img / "manifest.json").write_text(json.dumps({"version": version}) + "\n")
    cur = img.parent / "current"
    tmp = img.parent / "current.new"
    os.symlink(version, tmp)
    os.replace(tmp, cur)


def test_the_standby_mirrors_every_change_and_a_stale_mirror_is_reported(
        pair_lab: Pair) -> None:
    dig = require_tool("dig")
    p = pair_lab
    m1, m2 = p.masters["m01"], p.masters["m02"]
    up(p)
    # Written on the active once the pair runs.
    _publish(m1, "v1", (3 << 20) + 5)  # several chunks
    (m1.dir / "boot" / "pxelinux.cfg").mkdir()
    (m1.dir / "boot" / "pxelinux.cfg" / "default").write_text("DEFAULT local\n")
    (m1.state / "ssh").mkdir()
    (m1.state / "ssh" / "known_hosts").write_text("198.18.0.11 ssh-ed25519 AAAAC3lab\n")
    (m2.dir / "boot" / "stray.cfg").write_text("only on the standby\n")
    m1.inventory.write_text(m1.inventory.read_text() + W2)
    try:
        wait_for(lambda: _files(m2) == _files(m1), 40, "m02's mirror to be m01's files")
    except AssertionError:
        raise AssertionError(f"{_files(m1)}\n{_files(m2)}\n{p.logs()}") from None
    assert "stray.cfg" not in _files(m2)
    # The standby's serve reloaded the mirrored inventory: its DNS knows w2.
    wait_for(lambda: m1.ns.run([dig, "+short", "+time=1", "+tries=2", "@198.18.0.2",
                                "w2.lab.example"], check=False).stdout.strip()
             == "198.18.0.12", 20, "m02's DNS to answer for w2 (the mirrored inventory)")
    code, doc, text = _status(m2)
    mine = _mine(doc, "m02")
    assert code == 0, (doc, text)
    assert set(mine) == {"inventory", "known_hosts", "boot", "images"}, mine
    assert all(k["last_sync"] and not k["stale"] and k["role"] == "standby"
               for k in mine.values()), mine
    assert all(k["role"] == "source" for k in _mine(doc, "m01").values()), doc
    assert "mirror" in text and "in sync" in text and "STALE" not in text, text
    # The status page of either master shows both, with their pair state.
    page = json.loads(m1.ns.run(["curl", "-s", "--max-time", "10",
                                 "http://198.18.0.2:8080/api/v1/status"]).stdout)
    states = {m["host"]: m["state"] for m in page["masters"]}
    assert states["m01"].startswith("active, in sync"), states
    assert states["m02"] == "standby, mirror in sync", states

    # Cut off: m02 takes the VIP with what it has; m01 publishes v2 meanwhile.
    p.isolate(True)
    wait_for(m2.holds_vip, 20, "m02 to take the VIP (it sees no adverts)")
    _publish(m1, "v2", 4096)
    wait_for(lambda: _mine({"masters": [m2.status()]}, "m02").get("images", {})
             .get("stale"), 30, "m02 to report its mirror stale")
    code, doc, text = _status(m2)
    assert code == 1, (doc, text)
    assert "STALE" in text, text
    assert "active with a stale" in m2.log(), m2.log()[-3000:]
    assert not (m2.dir / "boot" / "images" / "base" / "v2").exists()
    page = json.loads(m2.ns.run(["curl", "-s", "--max-time", "10",
                                 "http://198.18.0.2:8080/api/v1/status"]).stdout)
    states = {m["host"]: m["state"] for m in page["masters"]}
    assert "mirror STALE" in states["m02"] and states["m01"] == "not reachable", states

    # Mended: m01 (preempt) holds the VIP, m02 is the standby again and catches up.
    p.isolate(False)
    wait_for(lambda: m1.holds_vip() and not m2.holds_vip(), 30, "the VIP back on m01 alone")
    wait_for(lambda: _files(m2) == _files(m1), 40, "m02's mirror to catch up with v2")
    wait_for(lambda: _status(m2)[0] == 0, 30, "master status clean again")
