"""The machine a measurement ran on: versions, device, CPU, threads, git commit, and what
else the machine was doing. meta.json, ``jacbench info`` and the tuning's cache key read it.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import torch


def jacbench_version() -> str:
    """jacbench's installed version ("0+unknown" from a source tree never installed)."""
    try:
        return importlib.metadata.version("jacbench")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def install_hint(extra: str) -> str:
    """The pip command that adds ``extra`` to jacbench as it is installed: from its checkout
    (``pip install -e '/path/to/checkout[jax]'``) or from a package index."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return f"pip install -e '{checkout}[{extra}]'"
    return f"pip install 'jacbench[{extra}]'"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    """The commit of jacbench's own checkout (where it is installed from one, wherever the
    run's working directory is: a cluster job's often is not the checkout)."""
    # A copy of a checkout without its history (a container, a cluster node's scratch copy)
    # names its commit in JACBENCH_GIT_COMMIT.
    given = os.environ.get("JACBENCH_GIT_COMMIT", "").strip()
    if given:
        return given
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_driver() -> str | None:
    """The NVIDIA driver's version, as its kernel module reports it (None elsewhere)."""
    found = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", _read_text(_NVIDIA) or "")
    return found.group(1) if found else None


_NVIDIA = "/proc/driver/nvidia/version"


def environment(device: str = "cpu") -> dict[str, Any]:
    """Versions, device, CPU model, threads and git commit: what meta.json and ``info`` report."""
    dev = torch.device(device)
    cuda = torch.cuda.is_available()
    return {
        "jacbench": jacbench_version(),
        "torch": torch.__version__,
        "jax": _installed_version("jax"),
        "cuda": torch.version.cuda,
        "gpu_driver": _gpu_driver() if dev.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" and cuda else None,
        "host": platform.node() or None,
        "cpu_model": cpu_model(),
        "cpu_governor": _read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
        "slurm_job": slurm_job(),
    }


def slurm_job() -> str | None:
    """The Slurm job this process runs in (``12_3`` for task 3 of array job 12), or None."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def machine_state() -> dict[str, Any]:
    """What else the machine was doing: the cores other processes keep busy now (over
    ``OTHER_WORK_WINDOW``), load averages (1, 5, 15 min) and the CPU governor.

    Recorded in meta.json at a run's start and end; the summary warns when the machine was
    busy (see ``report.busy_warning``). Fields that this system does not expose are None.
    """
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    others = OtherWork()
    time.sleep(OTHER_WORK_WINDOW)
    other_cores = others.cores()
    return {
        "time": now_iso(),
        "other_cores": None if other_cores is None else round(other_cores, 2),
        "load_average": load,
        "cpu_governor": _read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_mhz": _read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"),
    }


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# Other work on the machine, in cores' worth of load, above which a run is flagged busy.
BUSY_LOAD = 0.5
# How long machine_state watches other processes: the 1-minute load average at a run's start
# still counts work that ended half a minute before (a run that followed another was called
# busy with the machine to itself); /proc/stat's ticks are 10 ms, so 0.1 s tells 0.5 cores.
OTHER_WORK_WINDOW = 0.1


class OtherWork:
    """What other processes did while this one measured: the CPU time the cores this
    process may run on used (/proc/stat, steal included) less this process's own and its
    descendants', live or ended (the workers and sandboxes that run user code for it), in
    cores' worth, from creation to ``cores``. The load average cannot tell: it counts this
    process too. Only this process's cores count: a Slurm job given one core of a node (or a
    process pinned by taskset) is not busy because a neighbour works on another."""

    def __init__(self) -> None:
        self._start = _cpu_snapshot()

    def cores(self) -> float | None:
        """Other work since creation, in cores' worth (None where the system does not say)."""
        end = _cpu_snapshot()
        if self._start is None or end is None or end[0] <= self._start[0]:
            return None
        wall, busy, own = (b - a for a, b in zip(self._start, end))
        return max(0.0, (busy - own) / wall)


def _cpu_snapshot() -> tuple[float, float, float] | None:
    """(wall seconds, busy CPU seconds of the cores this process may use, this process's CPU
    seconds and its descendants', live or ended)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    mine = {f"cpu{i}" for i in os.sched_getaffinity(0)}
    ticks = os.sysconf("SC_CLK_TCK")
    busy = 0
    try:
        for line in lines:
            name, *fields = line.split()
            if name not in mine:
                continue
            user, nice, system, idle, iowait, irq, softirq, *rest = (int(f) for f in fields)
            busy += user + nice + system + irq + softirq + (rest[0] if rest else 0)
    except ValueError:
        return None
    own = os.times()
    # A child that has ended and been waited for (a worker replaced past its deadline, a
    # sandbox closed) is counted in children_user/system: this process's work, not another's.
    mine_ended = own.user + own.system + own.children_user + own.children_system
    return time.monotonic(), busy / ticks, mine_ended + _descendants_cpu(ticks)


def _descendants_cpu(ticks: int) -> float:
    """CPU seconds of this process's live descendants (Linux' /proc; 0 elsewhere)."""
    parents: dict[int, int] = {}
    spent: dict[int, float] = {}
    try:
        entries = [e for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return 0.0
    for entry in entries:
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # after the name: state ppid … utime stime (the 12th and 13th)
        parents[int(entry.name)] = int(fields[1])
        spent[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    me, total = os.getpid(), 0.0
    for pid in spent:
        ancestor, seen = parents.get(pid), 0
        while ancestor not in (None, 0, 1, me) and seen < 64:
            ancestor, seen = parents.get(ancestor), seen + 1
        if ancestor == me and pid != me:
            total += spent[pid]
    return total
