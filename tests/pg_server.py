"""A throwaway PostgreSQL server for tests: initdb in a temp dir, loopback on a free port.

PostgreSQL refuses to run as root, so under root the data directory belongs to the
``postgres`` user (else ``nobody``) and the server binaries run through ``runuser``. Auth is
``trust`` on 127.0.0.1 only; the server and its files are removed when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["find_pg_bindir", "postgres_server"]


def find_pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl (Debian)."""
    found = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        bindir = initdb.parent
        m = re.match(r"\d+", bindir.parent.name)
        if m and (bindir / "pg_ctl").exists():
            found.append((int(m.group()), bindir))
    if not found:
        on_path = shutil.which("initdb")
        if on_path and shutil.which("pg_ctl"):
            return Path(on_path).parent
        return None
    return max(found)[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as_prefix() -> tuple[list[str], pwd.struct_passwd | None]:
    """Command prefix to drop root, and the user the server runs as (None: ourselves)."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        if shutil.which("runuser"):
            return ["runuser", "-u", name, "--"], user
        if shutil.which("setpriv"):
            return [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
            ], user
    pytest.skip("running as root and found no way (runuser/setpriv) to start PostgreSQL as a user")


@contextlib.contextmanager
def postgres_server() -> Iterator[dict]:
    """Start a server; yield {host, port, user, bindir}; always stop it and delete its files."""
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl under /usr/lib/postgresql/*/bin); "
            "install the `postgresql` package (.ci/setup-system.sh does)"
        )
    prefix, user = _run_as_prefix()
    tmp = Path(tempfile.mkdtemp(prefix="gridbot-pg-"))
    data = tmp / "data"
    log = tmp / "server.log"
    if user is not None:
        os.chown(tmp, user.pw_uid, user.pw_gid)
    os.chmod(tmp, 0o700)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}

    def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        # cwd=tmp: the unprivileged user may not be able to enter the caller's directory.
        return subprocess.run(
            [*prefix, *cmd],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    started = False
    try:
        r = run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        r = run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        started = True
        if r.returncode != 0:
            text = log.read_text() if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{r.stdout}\n{r.stderr}\n{text}")
        yield {"host": "127.0.0.1", "port": port, "user": "postgres", "bindir": str(bindir)}
    finally:
        if started:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
            _kill_leftover(data)
        shutil.rmtree(tmp, ignore_errors=True)


def _kill_leftover(data: Path) -> None:
    """If pg_ctl could not stop it, kill the postmaster by the pid in its pid file."""
    pidfile = data / "postmaster.pid"
    for _ in range(50):
        if not pidfile.exists():
            return
        time.sleep(0.1)
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
