"""Sandboxes: a worker sealed for one owner's untrusted code.

NOTE: [Sandboxes]
    jacbench runs other people's code: a student's routine in ``grade``, a user's routine or
    model factory in ``check`` and ``run``. Each owner gets a sandbox of its own (an
    ``Owner``: a key and its ``Seal``), started fresh on first use and gone, with every
    process it started, when its work ends (``close``):

    - its own folder, a copy of the owner's files only (a submission, or a routine's file
      with the Python files beside it), as its working folder and first on ``sys.path``;
      for a student nothing else of the parent's path (``Seal.keep_path`` false);
    - a clean environment (PATH, HOME and TMPDIR in its folder, the locale, where jacbench
      is), default signal dispositions, a session of its own, resource limits (open files,
      file size, address space; CPU time for a student);
    - when jacbench runs as root (autograders do), an unprivileged user (``nobody`` by
      default): the user's code cannot write to the output folder, to another submission or
      to jacbench's files, nor signal jacbench;
    - a launcher between jacbench and the worker, so that a worker that kills its parent
      kills the launcher, not jacbench, and ``os.killpg(0, …)`` reaches its own session only;
    - its output (print, stderr) captured up to ``Seal.output_cap`` bytes, the rest counted;
    - every process it started found and killed when it closes: all of a cgroup of its own
      where this system lets jacbench make one; else its session, the launcher's children
      (the launcher is a subreaper: orphans of the worker come back to it) and, where the
      launcher itself was killed, the orphans that came back to jacbench (a subreaper too).

    Without root the user's code runs as jacbench's user: it can still read and write what
    that user can, and find and signal jacbench's process by its id. docs/check-and-grade.md
    says what that leaves open and how to grade in a container instead.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jacbench.runs.workers import Worker, WorkerFailed  # noqa: F401 (WorkerFailed: run's)

DEFAULT_USER = "nobody"
OUTPUT_CAP = 1 << 20  # bytes of a sandbox's output kept; the rest is counted
# What a sandbox's copy of a routine's folder takes: its Python files, up to these.
COPY_MAX_FILES = 2000
COPY_MAX_BYTES = 64 << 20
CPU_SECONDS_PER_STUDENT = 3600  # a backstop: each call has its own deadline
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36


@dataclass(frozen=True)
class Limits:
    """Resource limits of a sandbox's processes (None: left as they are)."""

    open_files: int | None = 4096
    file_size: int | None = 1 << 30
    address_space: int | None = None  # bytes; None: the machine's memory (set at launch)
    cpu_seconds: int | None = None
    processes: int | None = 512  # applied where the sandbox runs as a user of its own


@dataclass(frozen=True)
class Seal:
    """How a sandbox is sealed: ``files`` (a file or folder) copied into its own folder;
    ``keep_path``: the parent's ``sys.path`` after that folder (a user's own modules), or only
    the interpreter's (a student's); ``user`` it runs as when jacbench is root (None: as
    jacbench); its limits and how much of its output is kept."""

    files: str | None = None
    keep_path: bool = True
    user: str | None = field(default_factory=lambda: _SANDBOX_USER[0])
    limits: Limits = field(default_factory=Limits)
    output_cap: int = OUTPUT_CAP
    reads: tuple[str, ...] = ()  # files the code must read where they are (its own file)


@dataclass(frozen=True)
class Owner:
    """Whose code a sandbox runs (a routine's spec, a student, a model's spec): one owner,
    one sandbox."""

    key: str
    seal: Seal = field(default_factory=Seal)

    @property
    def folder(self) -> Path:
        """The sandbox's own folder (the same for the owner all through this process)."""
        digest = hashlib.sha1(self.key.encode()).hexdigest()[:12]
        return _ROOT / f"{os.getpid()}-{digest}"

    def inside(self, path: str | Path) -> Path:
        """Where ``path``, one of the owner's files, lies in the sandbox's folder."""
        path = Path(path).resolve()
        files = Path(self.seal.files).resolve() if self.seal.files else None
        if files is None:
            return path
        base = files if files.is_dir() else files.parent
        return self.folder / path.relative_to(base)


_ROOT = Path(tempfile.gettempdir()) / "jacbench-sandboxes"
# Why a sandbox asked to run as its own user ran as jacbench's (root) instead, this process.
UNSEALED: set[str] = set()
# The user sandboxes made from now on run as when jacbench is root (--sandbox-user).
_SANDBOX_USER: list[str | None] = [DEFAULT_USER]


def use_user(user: str) -> None:
    """Run the sandboxes made from now on as ``user`` when jacbench is root
    (``--sandbox-user``; ``nobody`` by default).

    Raises:
        ValueError: there is no such user on this machine.
    """
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"--sandbox-user: there is no user {user!r} on this machine") from None
    _SANDBOX_USER[0] = user


def unsealed_warning() -> str | None:
    """One sentence when a sandbox of this process was asked for its own user and ran as
    root instead (see docs/sandbox.md), else None."""
    if not UNSEALED:
        return None
    why = "; ".join(sorted(UNSEALED))
    return (
        f"user code ran as root, not as its own user ({why}): it could write where root "
        "can and signal jacbench. Give it a Python that user can read, or grade in a "
        "container (docs/sandbox.md)."
    )


def owner_of_spec(spec: str) -> Owner:
    """The owner of a user's routine or model named by ``spec`` in ``run`` or ``check``: its
    own sandbox, its file read where it lies (and its folder on the import path), the
    parent's import path kept (a module of the user's imports as in the user's process)."""
    where = spec.rpartition(":")[0]
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    reads = (str(Path(where).expanduser().resolve()),) if is_file else ()
    return Owner(spec, Seal(reads=reads))


def owner_of_callable(pickled: bytes) -> Owner:
    """The owner of a function given by value (pickled by reference: its module imports in
    the sandbox as in the user's process)."""
    return Owner(f"callable:{hashlib.sha1(pickled).hexdigest()}", Seal())


def submission_owner(student: str, files: Path) -> Owner:
    """The owner of one student's submission in ``grade``: a copy of only its files, nothing
    of the parent's import path, a CPU-time limit."""
    limits = Limits(cpu_seconds=CPU_SECONDS_PER_STUDENT)
    return Owner(f"student:{student}", Seal(str(files), keep_path=False, limits=limits))


def spec_inside(owner: Owner, spec: str) -> str:
    """``spec`` (``path/file.py:function``) as it is named inside the owner's sandbox."""
    where, _, function = spec.rpartition(":")
    if not owner.seal.files or not (where.endswith(".py") or "/" in where):
        return spec
    return f"{owner.inside(Path(where).expanduser())}:{function}"


@dataclass
class Output:
    """A sandbox's captured output: the first ``cap`` bytes, and how many more there were."""

    cap: int
    kept: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    notes: list[str] = field(default_factory=list)  # jacbench's own, not counted

    def take(self, chunk: bytes) -> None:
        room = max(0, self.cap - len(self.kept))
        self.kept += chunk[:room]
        self.dropped += max(0, len(chunk) - room)

    @property
    def text(self) -> str:
        """What was kept, as text, and a line saying what was cut."""
        cut = f"\n[… {self.dropped} more bytes of output cut]\n" if self.dropped else ""
        notes = "".join(f"[jacbench: {note}]\n" for note in dict.fromkeys(self.notes))
        return notes + self.kept.decode(errors="replace") + cut


class Sandbox:
    """One owner's sealed worker: started on first use, again after it died (from a fresh
    copy of the owner's files), and with every process it started gone at ``close``."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self.output = Output(owner.seal.output_cap)
        self._worker: Worker | None = None
        self._launched: _Launch | None = None

    def worker(self) -> Worker:
        """The owner's worker, alive."""
        if self._worker is None or not self._worker.alive:
            self._stop()
            self._launched = _launch(self.owner, self.output)
            self._worker = self._launched.worker
        return self._worker

    def close(self) -> None:
        """End the worker and every process it started; remove the folder."""
        self._stop()
        shutil.rmtree(self.owner.folder, ignore_errors=True)

    def _stop(self) -> None:
        launched, self._launched, self._worker = self._launched, None, None
        if launched is not None:
            launched.stop()


# ---------------------------------------------------------------------------- registry
_OPEN: dict[Owner, Sandbox] = {}


def sandbox(owner: Owner) -> Sandbox:
    """The owner's sandbox, opened on first use."""
    found = _OPEN.get(owner)
    if found is None:
        found = _OPEN[owner] = Sandbox(owner)
    return found


def run(owner: Owner, function: Callable[..., Any], *args: Any, deadline: float) -> Any:
    """``function(*args)`` in the owner's sandbox; a worker that fails is replaced by a fresh
    one for the owner's next request.

    Raises:
        WorkerFailed: as ``Worker.call``.
    """
    worker = sandbox(owner).worker()
    try:
        return worker.call(function, *args, deadline=deadline)
    except WorkerFailed as failure:
        if not failure.error_type:
            worker.kill()
        raise


def close(owner: Owner) -> str:
    """Close the owner's sandbox (if open); its captured output."""
    found = _OPEN.pop(owner, None)
    if found is None:
        return ""
    found.close()
    return found.output.text


@contextlib.contextmanager
def paused(owner: Owner) -> Iterator[None]:
    """Within the block none of the owner's processes runs (its cgroup frozen where it has
    one, else each of them stopped), so that nothing it left running competes with what
    jacbench times meanwhile; they go on after it."""
    found = _OPEN.get(owner)
    launched = found._launched if found is not None else None
    if launched is None:
        yield
        return
    stopped = _pause(launched)
    try:
        yield
    finally:
        _go_on(launched, stopped)


@atexit.register
def close_all() -> None:
    """Close every open sandbox."""
    for owner in list(_OPEN):
        close(owner)


@contextlib.contextmanager
def closing_all() -> Iterator[None]:
    """Within the block sandboxes open as needed; after it, every one opened in it is
    closed."""
    before = set(_OPEN)
    try:
        yield
    finally:
        for owner in [o for o in _OPEN if o not in before]:
            close(owner)


# ---------------------------------------------------------------------------- launching
@dataclass
class _Launch:
    """A launched worker: the launcher's process, the worker's id, how to find the rest."""

    worker: Worker
    launcher: subprocess.Popen
    worker_pid: int
    cgroup: Path | None
    uid: int | None
    started: float
    reader: threading.Thread

    def stop(self) -> None:
        """Kill the worker's session, the launcher and every process they started."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.worker_pid, signal.SIGKILL)
        self.worker.kill()
        _sweep(self)
        self.reader.join(timeout=5)


def _identity(user: str | None, reads: tuple[str, ...] = ()) -> tuple[tuple[int, int] | None, str]:
    """(uid, gid) to run as, ``user``'s when jacbench is root (else None), and why not where
    it was asked for and cannot be: no such user, or the interpreter, torch or jacbench lie
    where that user cannot read them (a Python under /root, say)."""
    if user is None or os.geteuid() != 0:
        return None, ""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None, f"there is no user {user!r}"
    identity = entry.pw_uid, entry.pw_gid
    for path in [*_needed_paths(), *(Path(p).resolve() for p in reads)]:
        if not _reachable(path, *identity):
            return None, f"{user} cannot read {path}"
    return identity, ""


def _needed_paths() -> list[Path]:
    """What a worker must read: the interpreter and where torch and jacbench are imported from."""
    import torch

    return [
        Path(sys.executable).resolve(),
        Path(torch.__file__).resolve().parent,
        Path(__file__).resolve().parents[1],
    ]


def _reachable(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid`` can reach ``path`` (search every folder above it) and read it."""
    for place in [*reversed(path.parents), path]:
        try:
            mode = place.stat()
        except OSError:
            return False
        shift = 6 if mode.st_uid == uid else 3 if mode.st_gid == gid else 0
        needed = 0o5 if place.is_dir() else 0o4
        if (mode.st_mode >> shift) & needed != needed:
            return False
    return True


def _prepare_folder(owner: Owner, identity: tuple[int, int] | None) -> None:
    """A fresh copy of the owner's files in its folder, owned by the user it runs as."""
    folder = owner.folder
    shutil.rmtree(folder, ignore_errors=True)
    _ROOT.mkdir(mode=0o711, exist_ok=True)
    folder.mkdir(mode=0o700)
    if owner.seal.files:
        source = Path(owner.seal.files)
        if source.is_dir():
            _copy_python_files(source, folder)
        elif source.is_file():
            shutil.copy2(source, folder / source.name)
    if identity is not None:
        for path in [folder, *folder.rglob("*")]:
            with contextlib.suppress(OSError):
                os.lchown(path, *identity)


def _copy_python_files(source: Path, target: Path) -> None:
    """The Python files under ``source`` (no hidden ones, no caches), up to the caps."""
    count = size = 0
    for path in sorted(source.rglob("*.py")):
        relative = path.relative_to(source)
        if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        if not path.is_file() or path.is_symlink():
            continue
        count += 1
        size += path.stat().st_size
        if count > COPY_MAX_FILES or size > COPY_MAX_BYTES:
            break
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / relative)


def _environment(owner: Owner) -> dict[str, str]:
    """The worker's whole environment: nothing of the parent's but what a worker needs."""
    folder = str(owner.folder)
    here = str(Path(__file__).resolve().parents[2])  # where jacbench itself is imported from
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": folder,
        "TMPDIR": folder,
        "LANG": "C.UTF-8",
        "PYTHONPATH": here,
        "PYTHONDONTWRITEBYTECODE": "1",
        "JACBENCH_CACHE_DIR": folder,
    }
    for name in ("JACBENCH_TUNING", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _import_path(owner: Owner) -> list[str]:
    """``sys.path`` in the worker: its folder, then the parent's where the seal keeps it."""
    if not owner.seal.keep_path:
        return [str(owner.folder)]
    parent = [os.getcwd() if p == "" else os.path.abspath(p) for p in sys.path]
    return [str(owner.folder), *dict.fromkeys(parent)]


def _limits(limits: Limits, own_user: bool) -> list[tuple[str, int]]:
    chosen = dataclasses.replace(
        limits, address_space=limits.address_space or _machine_memory(), processes=None
    )
    found = [
        ("RLIMIT_NOFILE", chosen.open_files),
        ("RLIMIT_FSIZE", chosen.file_size),
        ("RLIMIT_CPU", chosen.cpu_seconds),
        ("RLIMIT_CORE", 0),
    ]
    if "CUDA_VISIBLE_DEVICES" not in os.environ and not _has_gpu():
        found.append(("RLIMIT_AS", chosen.address_space))  # CUDA maps far more than it uses
    if own_user:
        found.append(("RLIMIT_NPROC", limits.processes))
    return [(name, int(value)) for name, value in found if value is not None]


def _machine_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def _has_gpu() -> bool:
    return Path("/dev/nvidia0").exists()


# The launcher: a small interpreter (jacbench is not imported) between jacbench and the
# worker. It dies with jacbench, adopts the worker's orphans, makes the worker a session of
# its own as the sandbox's user, and exits as the worker did.
_LAUNCHER = r"""
import ctypes, json, os, signal, sys
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None)
libc.prctl(1, signal.SIGKILL)
libc.prctl(36, 1)
signal.signal(signal.SIGINT, signal.SIG_IGN)
if cfg["cgroup"]:
    try:
        with open(cfg["cgroup"], "w") as procs:
            procs.write(str(os.getpid()))
    except OSError:
        pass
pid = os.fork()
if pid == 0:
    try:
        os.setsid()
        import resource
        for name, value in cfg["limits"]:
            resource.setrlimit(getattr(resource, name), (value, value))
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["gid"])
            os.setuid(cfg["uid"])
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execve(sys.executable, [sys.executable, "-c", cfg["main"]], os.environ)
    except BaseException as error:
        os.write(2, ("sandbox: %s\n" % error).encode())
    os._exit(126)
os.write(cfg["status"], b"%d\n" % pid)
os.close(cfg["status"])
while True:
    try:
        child, status = os.waitpid(-1, 0)
    except ChildProcessError:
        os._exit(125)
    except InterruptedError:
        continue
    if child == pid:
        break
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.WEXITSTATUS(status))
"""
# The worker's main: its import path, then serve on the inherited pipe.
_WORKER_MAIN = (
    "import json, os, sys\n"
    "cfg = json.loads(os.environ.pop('JACBENCH_SANDBOX'))\n"
    "sys.path[:] = [*cfg['path'], *[p for p in sys.path if p not in ('', os.getcwd())]]\n"
    "from jacbench.runs.workers import serve_descriptor\n"
    "serve_descriptor(cfg['fd'])\n"
)


def _launch(owner: Owner, output: Output) -> _Launch:
    """Start the owner's worker behind its launcher (see NOTE: [Sandboxes])."""
    _become_subreaper()
    identity, refused = _identity(owner.seal.user, owner.seal.reads)
    if refused:
        output.notes.append(f"ran as its own user, not {owner.seal.user}: {refused}")
        UNSEALED.add(refused)
    _prepare_folder(owner, identity)
    parent_end, child_end = multiprocessing.Pipe(duplex=True)
    status_read, status_write = os.pipe()
    cgroup = _cgroup()
    env = _environment(owner)
    env["JACBENCH_SANDBOX"] = json.dumps({"path": _import_path(owner), "fd": child_end.fileno()})
    config = {
        "cgroup": str(cgroup / "cgroup.procs") if cgroup else "",
        "limits": _limits(owner.seal.limits, identity is not None),
        "uid": identity[0] if identity else None,
        "gid": identity[1] if identity else None,
        "main": _WORKER_MAIN,
        "status": status_write,
    }
    started = time.time()
    launcher = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, json.dumps(config)],
        pass_fds=(child_end.fileno(), status_write),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=owner.folder,
        env=env,
    )
    child_end.close()
    os.close(status_write)
    worker_pid = _read_worker_pid(status_read)
    reader = threading.Thread(target=_read_output, args=(launcher, output), daemon=True)
    reader.start()
    uid = identity[0] if identity else None
    return _Launch(Worker(parent_end, launcher), launcher, worker_pid, cgroup, uid, started, reader)


def _read_worker_pid(fd: int) -> int:
    with os.fdopen(fd, "rb") as status:
        line = status.readline()
    try:
        return int(line)
    except ValueError:
        return -1  # the launcher failed before forking: nothing of the worker's to find


def _read_output(launcher: subprocess.Popen, output: Output) -> None:
    stream = launcher.stdout
    assert stream is not None
    for chunk in iter(lambda: os.read(stream.fileno(), 65536), b""):
        output.take(chunk)


def _become_subreaper() -> None:
    """Orphans of the sandboxes come back to jacbench, which then finds and ends them."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1)


# --------------------------------------------------------------------------- sweeping
_CGROUP_COUNT = [0]


def _cgroup() -> Path | None:
    """A new cgroup (v2) for one sandbox, where this system lets jacbench make one."""
    mount = _cgroup2_mount()
    if mount is None:
        return None
    _CGROUP_COUNT[0] += 1
    path = mount / f"jacbench-{os.getpid()}-{_CGROUP_COUNT[0]}"
    try:
        path.mkdir()
    except OSError:
        return None
    # A cap on its processes that holds for root too (RLIMIT_NPROC does not): where the pids
    # controller can be had.
    with contextlib.suppress(OSError):
        if not (path / "pids.max").exists():
            (mount / "cgroup.subtree_control").write_text("+pids")
        (path / "pids.max").write_text(str(Limits().processes))
    return path


def _cgroup2_mount() -> Path | None:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(" - ")
        if len(fields) == 2 and fields[1].startswith("cgroup2 "):
            mount = Path(fields[0].split()[4])
            if os.access(mount, os.W_OK):
                return mount
    return None


def _sweep(launched: _Launch) -> None:
    """Kill every process the sandbox started, wherever it went, and reap those that came
    back to jacbench."""
    if launched.cgroup is not None:
        with contextlib.suppress(OSError):  # cgroup.kill: every member at once (Linux 5.14)
            (launched.cgroup / "cgroup.kill").write_text("1")
    for _ in range(200):
        victims = _victims(launched)
        if not victims:
            break
        for pid, ours in victims.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            if ours:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)
    if launched.cgroup is not None:
        with contextlib.suppress(OSError):
            launched.cgroup.rmdir()


def _pause(launched: _Launch) -> list[int]:
    """Freeze the sandbox's cgroup (and wait until it is), else SIGSTOP its processes, twice
    over (one may have started another meanwhile); those stopped."""
    if launched.cgroup is not None:
        with contextlib.suppress(OSError):
            (launched.cgroup / "cgroup.freeze").write_text("1")
            events = launched.cgroup / "cgroup.events"
            for _ in range(500):
                if "frozen 1" in events.read_text():
                    return []
                time.sleep(0.002)
    stopped: list[int] = []
    for _ in range(2):
        for pid in _victims(launched):
            if pid not in stopped:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
    return stopped


def _go_on(launched: _Launch, stopped: list[int]) -> None:
    if launched.cgroup is not None:
        with contextlib.suppress(OSError):
            (launched.cgroup / "cgroup.freeze").write_text("0")
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGCONT)


def _victims(launched: _Launch) -> dict[int, bool]:
    """The sandbox's processes still alive, each with whether jacbench is its parent."""
    found: dict[int, bool] = {}
    members: set[int] = set()
    if launched.cgroup is not None:
        with contextlib.suppress(OSError):
            members = {int(p) for p in (launched.cgroup / "cgroup.procs").read_text().split()}
    me, ours = os.getpid(), _ours()
    for pid, ppid, session, uid, start, state in _processes():
        if pid == me or state == "Z" and ppid != me:
            continue
        if pid in members or session == launched.worker_pid or ppid == launched.launcher.pid:
            found[pid] = ppid == me
        elif ppid == me and pid not in ours and start >= launched.started - 1:
            # an orphan come back to jacbench: the sandbox's where it runs as its own user,
            # else any started since the sandbox was
            if launched.uid is None or uid == launched.uid:
                found[pid] = True
    return found


def _ours() -> set[int]:
    """jacbench's own children: the launchers of open sandboxes, its pooled processes."""
    pids = {s._launched.launcher.pid for s in _OPEN.values() if s._launched is not None}
    return pids | {p.pid for p in multiprocessing.active_children() if p.pid is not None}


def _boot_time() -> float:
    try:
        return time.time() - float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


_BOOT = _boot_time()


def _processes() -> Iterator[tuple[int, int, int, int, float, str]]:
    """(pid, parent, session, uid, start time, state) of every process (Linux' /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            uid = entry.stat().st_uid
        except OSError:
            continue
        # after the name: state ppid pgrp session … starttime (the 20th)
        fields = stat.rpartition(")")[2].split()
        ppid, session, start = int(fields[1]), int(fields[3]), int(fields[19])
        yield int(entry.name), ppid, session, uid, _BOOT + start / ticks, fields[0]
