"""Pure parts of dsas-push's node agents (push/agent.py): the SSHSIG check of reports and
the master's reading of an order's output."""

from __future__ import annotations

import os

import pytest

from lab.testing import require_tool
from provision.push import agent


def test_sshsig_verification_against_ssh_keygen(tmp_path):
    """verify_sshsig checks what ``ssh-keygen -Y sign`` makes: the key, the namespace,
    the message; a flipped byte or another key fails."""
    require_tool("ssh-keygen")
    key = tmp_path / "k"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {key}")  # noqa: S605
    msg = tmp_path / "m"
    msg.write_bytes(b"DSAS-PUSH-REPORT 1\nRID x\n")
    os.system(f"ssh-keygen -q -Y sign -f {key} -n {agent.REPORT_NS} {msg}")  # noqa: S605
    sig = (tmp_path / "m.sig").read_bytes()
    ktype, blob = (key.with_suffix(".pub")).read_text().split()[:2]
    assert agent.verify_sshsig(msg.read_bytes(), sig, agent.REPORT_NS, [(ktype, blob)]) == ktype
    with pytest.raises(agent.SigError, match="namespace|made for"):
        agent.verify_sshsig(msg.read_bytes(), sig, agent.ORDER_NS, [(ktype, blob)])
    with pytest.raises(agent.SigError, match="does not verify"):
        agent.verify_sshsig(msg.read_bytes() + b"!", sig, agent.REPORT_NS, [(ktype, blob)])
    other = tmp_path / "o"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")  # noqa: S605
    otype, oblob = (other.with_suffix(".pub")).read_text().split()[:2]
    with pytest.raises(agent.SigError, match="not trusted"):
        agent.verify_sshsig(msg.read_bytes(), sig, agent.REPORT_NS, [(otype, oblob)])


def test_judge_takes_only_a_verified_switch_to_this_release():
    """The master's reading of an order's output: only COMMITRC 0 with the release live
    is a switch; every refusal names its reason, escaped for the log."""
    from provision.push.remote import parse_kv
    ok = parse_kv("LINKED b\nSTAGED 3\nMISSED 0\nFIXED 1\nGOT 9 ab\nLIVE r1\nCOMMITRC 0\n")
    assert agent.judge(ok, "r1").ok
    assert not agent.judge(ok, "r2").ok
    for text, why in (("NOAGENT live is x\x1b[2J, not the base\n", "live is x\\x1b[2J"),
                      ("NOSUMS 1\n", "sums"), ("MISSED 2\n", "2 staged files"),
                      ("MISSED 0\nNOFIX chmod\n", "fixup failed"),
                      ("MISSED 0\nGOT 1 zz\nCOMMITRC 4\n", "verify failed"),
                      ("MISSED 0\nCOMMITRC 1\n", "exited 1")):
        r = agent.judge(parse_kv(text), "r1")
        assert not r.ok and why in r.why, (text, r.why)
