"""A real single-node Slurm (slurmctld + slurmd + munge on localhost) for the ``slurm`` tests.

Debian's ``slurm-wlm`` and ``munge`` packages (installed with apt when missing), a munge
key and daemon, then slurmctld and slurmd on localhost from a private ``slurm.conf`` (the
node's CPUs and about 80 % of its memory, accounting off) with their state under a temp
dir; the daemons are stopped by their pid files, never by name. Opt-in: tests using it are
marked ``@pytest.mark.slurm``.

Run by hand (prints the config dir and leaves the daemons up until Enter)::

    python tests/slurm_fixture.py

``SingleNodeSlurm.env()`` gives the environment (``SLURM_CONF``) that ``sbatch``,
``squeue`` and submitit's ``AutoExecutor(cluster="slurm")`` need.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

_PACKAGES = ("slurm-wlm", "munge")
_MUNGE_DIRS = ("/etc/munge", "/var/run/munge", "/var/log/munge", "/var/lib/munge")

_CONF = """\
ClusterName=harness-test
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
MaxArraySize=1001
NodeName=localhost CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be stood up here; the message carries the command and its error."""


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)


def ensure_packages() -> None:
    """Install slurm-wlm and munge with apt if their daemons are missing (needs root)."""
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurmctld/munged are not installed and we are not root to apt-get install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", *_PACKAGES]):
        out = _run(cmd, env=env, timeout=900)
        if out.returncode != 0:
            raise SlurmUnavailable(f"`{' '.join(cmd)}` failed ({out.returncode}): {out.stderr[-2000:]}")


def ensure_munge() -> None:
    """A munge key and a running munged (shared by every test session on this machine)."""
    if _run(["munge", "-n"]).returncode == 0:
        return
    for d in _MUNGE_DIRS:
        Path(d).mkdir(parents=True, exist_ok=True)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.write_bytes(os.urandom(1024))
    _run(["chown", "-R", "munge:munge", *_MUNGE_DIRS])
    key.chmod(0o400)
    out = _run(["munged", "--force"])
    if out.returncode != 0 or _run(["munge", "-n"]).returncode != 0:
        raise SlurmUnavailable(f"`munged --force` failed ({out.returncode}): {out.stderr.strip()}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SingleNodeSlurm:
    """slurmctld + slurmd on localhost with a private config under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.conf = self.dir / "slurm.conf"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout_s: float = 60) -> SingleNodeSlurm:
        ensure_packages()
        ensure_munge()
        for sub in ("state", "spool", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
        self.conf.write_text(_CONF.format(dir=self.dir, cpus=os.cpu_count() or 1, mem_mb=mem_mb,
                                          ctld_port=_free_port(), d_port=_free_port()))
        for daemon in ("slurmctld", "slurmd"):
            out = _run([daemon, "-f", str(self.conf)], env=self.env())
            if out.returncode != 0:
                self.stop()
                raise SlurmUnavailable(f"`{daemon} -f {self.conf}` failed ({out.returncode}): "
                                       f"{out.stderr.strip()}\n{self.logs()}")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = _run(["sinfo", "-h", "-o", "%t"], env=self.env())
            if out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc"):
                return self
            time.sleep(0.5)
        self.stop()
        raise SlurmUnavailable(f"the node never became idle (sinfo: {out.stdout.strip()!r} "
                               f"{out.stderr.strip()!r})\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.dir / "log" / name
            if path.exists():
                parts.append(f"--- {path} (tail)\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop slurmd then slurmctld by their pid files (never by name: other sessions may run Slurm)."""
        for name in ("slurmd.pid", "slurmctld.pid"):
            pid_file = self.dir / name
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text().strip() or 0)
            if pid <= 0:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


if __name__ == "__main__":
    import tempfile

    cluster = SingleNodeSlurm(Path(tempfile.mkdtemp(prefix="harness-slurm-"))).start()
    print(f"SLURM_CONF={cluster.conf}")
    print(_run(["sinfo"], env=cluster.env()).stdout)
    try:
        input("Enter to stop the daemons ")
    finally:
        cluster.stop()
