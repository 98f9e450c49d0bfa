"""The hosts as `dsas rollout` moves them (``run.Nodes``): over SSH with host keys
verified, the push's atomic verified releases, and the nodes' own reports.

- a netboot host is rebooted (the master already serves it the pinned version);
- a disk host gets the image's root tree, unpacked on the master with a marker
  ``.dsas-image`` ("IMAGE VERSION"), as a dsas-push release under
  ``DISK_ROOT/IMAGE`` (transferred, verified by manifest, switched atomically), whose
  ``--then`` writes the host's dsas.conf for the new version as /etc/dsas.conf.new
  (checksummed, as `dsas assign` delivers it) and re-applies it (``dsas-init reapply``,
  detached): only once the release is live, so a failed push delivers nothing;
- ready: the host's first ``ready`` or ``failed`` report since the move; ``ready``
  must name ``IMAGE@VERSION`` (dsas-init reports the version it runs);
- a netboot host made new SSH host keys at its boot (it is stateless): the key its
  ready report carried is trusted in place of the old one, when that report is the
  host's own (from its inventory address, with this boot's valid token, since the
  move), as `dsas trust --from-boot-report --replace` would; otherwise the rollout
  says the key is not trusted and why (``trust_reported``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..assign.farm import REAPPLY, REBOOT, deliver_script, run_on
from ..assign.live import StepFailed
from ..imaging.store import ImageStore
from ..inventory.model import Inventory
from ..policy.boottree import pinned
from ..push.options import PushOptions
from ..push.push import Pusher
from ..push.targets import Target
from ..render.engine import render_host
from ..sshtrust.hostkeys import trust_new_boot_key
from ..sshtrust.sshconf import SshConfig
from ..state import StateStore, events
from ..state.pushes import History
from .plan import HostMove

DISK_ROOT = "/var/lib/dsas/image"
MARKER = ".dsas-image"


@dataclass
class LiveNodes:
    """The real hosts of one rollout."""

    inv: Inventory
    cfg: SshConfig
    store: StateStore
    images: ImageStore
    disk_root: str = DISK_ROOT
    reboot: str = REBOOT       # the command that reboots a netboot host
    # what a disk host runs once the release is live; None: its dsas.conf for the new
    # version delivered, then `dsas-init reapply` (``reapply_script``)
    reapply: str | None = None
    timeout: float = 60
    poll: float = 0.5
    trust_reported: bool = True  # a netboot host's new host key, from its ready report
    _trees: dict[tuple[str, str], Path] = field(default_factory=dict)

    def move(self, m: HostMove, image: str, version: str) -> float:
        since = time.time()
        if m.boot == "netboot":
            run_on(self.cfg, m.host, m.address, self.reboot, "reboot", self.timeout)
            return since
        tree = self.tree(image, version)
        pusher = Pusher(self.cfg, History(self.store))
        out = pusher.push([Target(m.host, m.address, m.role)],
                          PushOptions(src=str(tree) + "/", to=f"{self.disk_root}/{image}",
                                      delete=True, parallel=1,
                                      then=self.reapply or self.reapply_script(m.host, image,
                                                                               version)))
        if out.failed:
            raise StepFailed(f"{m.host}: the push of {image}@{version} failed: "
                             f"{out.failed[0].reason} (its live tree is unchanged)")
        return since

    def reapply_script(self, name: str, image: str, version: str) -> str:
        """A disk host's ``--then``: its dsas.conf as the master renders it with the host
        on ``image@version`` (IMAGE_VERSION names it), written as /etc/dsas.conf.new and
        checked by its sha256, then `dsas-init reapply` (which needs that file), detached."""
        host = self.inv.hosts[name]
        text = render_host(pinned(self.inv, host, {name: (image, version)}), host,
                           "dsas.conf")
        return f"{deliver_script(text)}; {REAPPLY}"

    def tree(self, image: str, version: str) -> Path:
        """The image's root tree with its marker, unpacked once per rollout."""
        key = (image, version)
        if key in self._trees:
            return self._trees[key]
        archive = self.images.dir(image, version) / "rootfs.tar.gz"
        if not archive.is_file():
            raise StepFailed(f"{image}@{version} has no rootfs.tar.gz in {self.images.root}:"
                             " a disk host needs the image's root tree")
        tmp = Path(tempfile.mkdtemp(prefix=f"dsas-rollout-{image}-"))
        try:
            subprocess.run(["tar", "-xzf", str(archive), "-C", str(tmp)], check=True,
                           capture_output=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StepFailed(f"cannot unpack {archive}: {e}") from None
        (tmp / MARKER).write_text(f"{image} {version}\n")
        self._trees[key] = tmp
        return tmp

    def wait_ready(self, m: HostMove, image: str, version: str, since: float,
                   timeout: float) -> str:
        want = f"{image}@{version}"
        deadline = time.monotonic() + timeout
        while True:
            # since the move exactly: the store's times are the master's clock (the HTTP
            # service's), and a report of the run before may be under a second old
            for r in events.outcomes_since(self.store, m.host, since):
                if r.stage == "failed":
                    raise StepFailed(f"{m.host} reports failed: {r.reason or '?'}")
                if not self._is(r.image, image, version):
                    raise StepFailed(f"{m.host} reports ready on {r.image or 'no version'},"
                                     f" not {want}")
                said = f"{m.host} reports ready on {want} after {r.ts - since:.1f} s"
                if m.boot == "netboot" and self.trust_reported:
                    said += "; " + self.trust_new_key(m, since)
                return said
            if time.monotonic() >= deadline:
                raise StepFailed(f"no ready report from {m.host} in {timeout:g} s")
            time.sleep(self.poll)

    def trust_new_key(self, m: HostMove, since: float) -> str:
        """Trust the SSH host key(s) ``m.host`` reported since ``since`` (its ready report
        of the new boot) in place of all its trusted ones (``trust_new_boot_key``)."""
        return trust_new_boot_key(self.cfg, self.store, self.inv, m.host, m.address, since)

    def _is(self, reported: str | None, image: str, version: str) -> bool:
        """The report names ``image`` at ``version``: as is, or by a name the store
        resolves to it (a node whose dsas.conf says ``current``)."""
        name, _, v = (reported or "").partition("@")
        return name == image and bool(v) and (v == version
                                              or self.images.resolve(image, v) == version)

    def close(self) -> None:
        for tmp in self._trees.values():
            shutil.rmtree(tmp, ignore_errors=True)
        self._trees.clear()
