"""Start and stop a single-node Slurm cluster (munged, slurmctld, slurmd) under one folder.

    python -m scripts.ci.cluster start /tmp/slurm   # prints export SLURM_CONF=...
    python -m scripts.ci.cluster stop /tmp/slurm    # stops the three daemons by their pid files

The tests start one through :func:`start_cluster` (see ``tests/test_sweep_slurm.py``). It needs
root (slurmd starts jobs as their user) and Debian's ``slurmctld slurmd slurm-client munge``
packages. Every file the daemons write (state, spool, pid files, logs, the munge key and socket)
stays under the given folder, and the ports are free ones picked at start, so the cluster does not
touch the machine's own Slurm or munge set-up.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).with_name("slurm.conf")
DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun")


class ClusterError(RuntimeError):
    """The cluster could not be started; the message is one line saying why."""


def unavailable_reason() -> str | None:
    """Why no cluster can start on this machine (not root, a program missing), else None."""
    if os.geteuid() != 0:
        return "a local Slurm cluster needs root (slurmd starts jobs as their user)"
    missing = [name for name in (*DAEMONS, *COMMANDS) if shutil.which(name) is None]
    if missing:
        return (
            f"Slurm/munge programs not found: {', '.join(missing)} "
            "(apt-get install slurmctld slurmd slurm-client munge)"
        )
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _memory_mb() -> int:
    """Memory to declare for the node: a little under the machine's, so slurmd accepts it."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(256, int(pages / 2**20 * 0.9))


@dataclass
class Cluster:
    """A running cluster: its folder and the ``SLURM_CONF`` that client commands need."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def pid_files(self) -> list[Path]:
        """Stop order: slurmd (ends its jobs), slurmctld, then munged."""
        return [self.root / "slurmd.pid", self.root / "slurmctld.pid", self.root / "munged.pid"]

    def cancel_jobs(self, timeout_s: float = 30.0) -> None:
        """Cancel every job of this cluster and wait (at most ``timeout_s``) until none is left,
        so that no job process outlives slurmd."""
        if not (self.root / "slurmctld.pid").is_file():
            return
        deadline = time.monotonic() + timeout_s
        try:
            _run("scancel", "--full", "--user", getpass.getuser(), env=self.env)
            while _run("squeue", "-h", "-o", "%i", env=self.env).strip():
                if time.monotonic() > deadline:
                    return
                time.sleep(0.5)
        except (ClusterError, subprocess.TimeoutExpired):
            return  # the controller is gone: nothing left to cancel through it

    def stop(self, timeout_s: float = 20.0) -> None:
        """Cancel the jobs, then stop each daemon by its pid file (SIGTERM, then SIGKILL after
        ``timeout_s``)."""
        self.cancel_jobs()
        for pid_file in self.pid_files():
            if pid_file.is_file():
                _terminate(int(pid_file.read_text().split()[0]), timeout_s)
                pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(pid: int, timeout_s: float) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def write_conf(root: Path, cpus: int | None = None) -> Path:
    """``root/slurm.conf`` from the template: this host, its CPUs, free ports, paths under root."""
    for folder in ("state", "spool", "logs", "munge"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    text = TEMPLATE.read_text().format(
        host=socket.gethostname().split(".")[0],
        slurmctld_port=_free_port(),
        slurmd_port=_free_port(),
        user=getpass.getuser(),
        munge_socket=root / "munge" / "munge.socket",
        root=root,
        cpus=cpus or os.cpu_count() or 1,
        memory_mb=_memory_mb(),
    )
    conf = root / "slurm.conf"
    conf.write_text(text)
    return conf


def _start_munged(root: Path) -> None:
    """munged with a fresh key; it insists on private (0700 / 0600) folders and files."""
    munge = root / "munge"
    munge.chmod(0o700)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    _run(
        "munged",
        "--force",
        f"--key-file={key}",
        f"--socket={munge / 'munge.socket'}",
        f"--pid-file={root / 'munged.pid'}",
        f"--log-file={root / 'logs' / 'munged.log'}",
        f"--seed-file={munge / 'munged.seed'}",
    )


def _run(*command: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        why = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise ClusterError(f"{command[0]} failed ({result.returncode}): {why[-1]}")
    return result.stdout


def wait_for_idle_node(cluster: Cluster, timeout_s: float = 60.0) -> None:
    """Block until the node reports ``idle`` (ready for jobs), at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    state = "no answer"
    while time.monotonic() < deadline:
        try:
            state = _run("sinfo", "-h", "-N", "-o", "%T", env=cluster.env).strip() or state
        except (ClusterError, subprocess.TimeoutExpired) as error:
            state = str(error)
        if state == "idle":
            return
        time.sleep(0.5)
    logs = cluster.root / "logs"
    raise ClusterError(f"the Slurm node is not idle after {timeout_s:.0f} s ({state}); see {logs}")


def start_cluster(root: Path, cpus: int | None = None, timeout_s: float = 60.0) -> Cluster:
    """Write the config, start munged, slurmctld and slurmd, and wait for an idle node.

    Raises:
        ClusterError: a daemon did not start or the node is not ready within ``timeout_s``;
            the daemons already started are stopped again.
    """
    reason = unavailable_reason()
    if reason:
        raise ClusterError(reason)
    root = Path(root).resolve()
    cluster = Cluster(root)
    conf = write_conf(root, cpus)
    try:
        _start_munged(root)
        # -c: a clean state (no jobs of an earlier cluster in this folder).
        _run("slurmctld", "-c", "-f", str(conf), env=cluster.env)
        _run("slurmd", "-f", str(conf), env=cluster.env)
        wait_for_idle_node(cluster, timeout_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def main(argv: list[str] | None = None) -> int:
    """``start DIR`` or ``stop DIR`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("root", type=Path, help="folder for the cluster's files")
    args = parser.parse_args(argv)
    cluster = Cluster(args.root.resolve())
    if args.action == "stop":
        cluster.stop()
        return 0
    try:
        start_cluster(args.root)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
