"""provision.proc: real commands, one-line errors naming the command and its status."""

from __future__ import annotations

import subprocess

import pytest

from provision import proc
from provision.errors import DsasError


def test_ok_captures_output() -> None:
    res = proc.run(["sh", "-c", "echo out; echo err >&2"], timeout=10)
    assert (res.returncode, res.stdout, res.stderr) == (0, "out\n", "err\n")
    assert res.ok


def test_false_names_the_command_and_code() -> None:
    with pytest.raises(proc.CommandError) as exc:
        proc.run(["false"], timeout=10)
    assert str(exc.value) == "`false` exited 1"
    assert exc.value.returncode == 1
    assert isinstance(exc.value, DsasError) and exc.value.exit_code == 1


def test_stderr_tail_on_one_line() -> None:
    with pytest.raises(proc.CommandError) as exc:
        proc.run(["sh", "-c", "echo boom >&2; exit 3"], timeout=10)
    assert str(exc.value) == "`sh -c 'echo boom >&2; exit 3'` exited 3: boom"
    assert exc.value.one_line() == str(exc.value)


def test_last_lines_only_joined() -> None:
    with pytest.raises(proc.CommandError) as exc:
        proc.run(["sh", "-c", "for i in 1 2 3 4 5; do echo line$i >&2; done; exit 4"],
                 timeout=10)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.endswith("exited 4: line3 | line4 | line5")


def test_timeout_names_the_limit() -> None:
    with pytest.raises(proc.CommandError) as exc:
        proc.run(["sleep", "30"], timeout=0.2)
    assert str(exc.value) == "`sleep 30` timed out after 0.2s"
    assert exc.value.returncode is None


def test_signal_named() -> None:
    with pytest.raises(proc.CommandError) as exc:
        proc.run(["sh", "-c", "kill -TERM $$"], timeout=10)
    assert str(exc.value).endswith("killed by SIGTERM")


def test_not_found() -> None:
    with pytest.raises(proc.CommandError, match="dsas-no-such-program not found"):
        proc.run(["dsas-no-such-program", "x"], timeout=10)


def test_secret_redacted_in_command_and_stderr() -> None:
    with pytest.raises(proc.CommandError) as exc:
        proc.run(["sh", "-c", 'echo "bad password $1" >&2; exit 2', "sh", "hunter2"],
                 timeout=10, secret=["hunter2"])
    assert "hunter2" not in str(exc.value)
    assert "<redacted>" in str(exc.value)


def test_check_false_returns_failure() -> None:
    res = proc.run(["sh", "-c", "exit 5"], timeout=10, check=False)
    assert res.returncode == 5 and not res.ok


def test_input_and_bytes() -> None:
    assert proc.run(["cat"], timeout=10, input=b"\0x", text=False).stdout == b"\0x"


def test_never_a_shell_string() -> None:
    with pytest.raises(TypeError):
        proc.run("echo hi", timeout=10)  # type: ignore[arg-type]


def test_spawn_kills_on_error() -> None:
    with pytest.raises(RuntimeError):
        with proc.spawn(["sleep", "30"]) as child:
            raise RuntimeError("caller failed")
    assert child.returncode is not None  # reaped, not left running


def test_spawn_streams_and_failure() -> None:
    with proc.spawn(["sh", "-c", "printf 'a\\rb\\nc'; echo bad >&2; exit 2"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None and child.stderr is not None
        got = list(proc.lines(child.stdout))
        err = child.stderr.read()
        rc = proc.wait(child, 10)
    assert got == ["a", "b", "c"]
    assert str(proc.failure(child.args, rc, err)).endswith("exited 2: bad")


def test_wait_timeout() -> None:
    with proc.spawn(["sleep", "30"]) as child:
        with pytest.raises(proc.CommandError, match=r"`sleep 30` timed out after 0.1s"):
            proc.wait(child, 0.1)


def test_not_executable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(proc.CommandError, match="Permission denied"):
        proc.run([str(script)], timeout=10)


def test_missing_cwd_is_not_a_missing_program(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(proc.CommandError) as exc:
        proc.run(["true"], timeout=10, cwd=tmp_path / "gone")
    assert "install it" not in str(exc.value)
