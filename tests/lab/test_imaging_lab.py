"""A real Debian image build (mmdebstrap, root): a new netboot initramfs reuses the
web image's root fs (the codec and cached tiny builds are in tests/unit/test_imaging.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from provision.imaging.build import Builder
from provision.imaging.store import ImageStore, sha256_file
from tests.support.paths import ROOT


def test_a_new_boot_image_reuses_the_debian_root_fs(tmp_path: Path) -> None:
    """Only the netboot initramfs changed: the web image gets it without mmdebstrap
    (a new version, same root fs bytes, the new kernel and initrd beside it)."""
    from lab.clone import build_images

    web = build_images("web")  # cached on this machine
    old = web.resolve("web") or ""
    other = ImageStore(tmp_path / "store")
    other.dir("web", old).parent.mkdir(parents=True)
    if subprocess.run(["cp", "-al", str(web.dir("web", old)), str(other.dir("web", old))],
                      capture_output=True, timeout=60).returncode != 0:
        shutil.copytree(web.dir("web", old), other.dir("web", old))
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "images", repo / "images")
    shutil.copytree(ROOT / "boot-scripts", repo / "boot-scripts")
    init = repo / "boot-scripts" / "initramfs" / "init"
    init.write_text(init.read_text() + "\n# changed\n")
    said: list[str] = []
    res = Builder(repo / "images", other, tmp_path / "cache", said.append).build("web")
    assert not res.cached and res.version != old
    assert f"  root fs of {old} reused" in "\n".join(said)
    assert not any("mmdebstrap" in line for line in said)
    netboot = other.resolve("netboot")
    assert res.manifest["boot"]["version"] == netboot != web.manifest("web", old)["boot"]["version"]
    assert other.verify("web", res.version) == []
    assert sha256_file(res.path / "rootfs.tar.gz") == sha256_file(web.dir("web", old) /
                                                                  "rootfs.tar.gz")
    assert (res.path / "initrd.img").read_bytes() == (other.dir("netboot", netboot or "") /
                                                      "initrd.img").read_bytes()
    assert res.manifest["rootfs"] == web.manifest("web", old)["rootfs"]


def test_the_web_image_carries_what_a_push_agent_needs_and_no_uftp_daemon_of_its_own() -> None:
    """dsas-push's node agent (push: {multicast: true, agent: true}) needs uftpd,
    OpenSSH's ssh-keygen and push-agent in /usr/lib/dsas on the image (dsas-init says
    "not in this image" otherwise and updates come by SSH). The web image has them;
    the uftp package's own daemon (every interface, any sender, into /tmp) is masked:
    uftpd runs only as dsas-init starts it."""
    from lab.clone import build_images

    web = build_images("web")
    version = web.resolve("web") or ""
    listing = subprocess.run(["tar", "-tvzf", str(web.dir("web", version) / "rootfs.tar.gz")],
                             capture_output=True, text=True, timeout=300, check=True).stdout
    entries = {line.split()[5].removeprefix("./"): line for line in listing.splitlines()
               if len(line.split()) >= 6}
    for path in ("usr/bin/uftpd", "usr/bin/ssh-keygen", "usr/bin/curl", "usr/sbin/dsas-init"):
        assert path in entries, path
    agent = entries.get("usr/lib/dsas/push-agent", "")
    assert agent.startswith("-rwxr-xr-x"), agent
    masked = entries.get("etc/systemd/system/uftp.service", "")
    assert masked.startswith("l") and masked.rstrip().endswith("-> /dev/null"), masked
    started = [p for p in entries if "uftp" in p and (
        p.startswith("etc/systemd/system/") and ".wants/" in p or p.startswith("etc/rc"))]
    assert started == [], started  # no systemd want, no sysv runlevel link
    tree = (ROOT / "boot-scripts" / "lib" / "push-agent").read_bytes()
    got = subprocess.run(["tar", "-xOzf", str(web.dir("web", version) / "rootfs.tar.gz"),
                          "usr/lib/dsas/push-agent"], capture_output=True, timeout=300,
                         check=True).stdout
    assert got == tree
