"""Sandboxes (NOTE: [Sandboxes]): one owner's code, sealed, and gone with all it started."""

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from jacbench.runs import sandbox
from jacbench.runs.workers import WorkerFailed

SUBMISSION = '''
import os, signal, subprocess, sys, time

def where():
    return os.getcwd(), sys.path[0], sorted(os.listdir(".")), dict(os.environ)

def helper_name():
    import helpers
    return helpers.NAME

def kill_parent():
    os.kill(os.getppid(), signal.SIGKILL)

def kill_group():
    os.killpg(0, signal.SIGTERM)

def signals():
    return signal.getsignal(signal.SIGINT) is signal.default_int_handler, signal.getsignal(
        signal.SIGTERM
    ) == signal.SIG_DFL

def detach(path):
    """A grandchild in a session of its own that ignores SIGTERM and outlives its parent."""
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            with open(path, "w") as out:
                out.write(str(os.getpid()))
            time.sleep(3600)
        os._exit(0)
    os.waitpid(child, 0)
    while not os.path.exists(path):
        time.sleep(0.01)
    return int(open(path).read())

def chatter(n):
    sys.stdout.write("x" * n)
    sys.stdout.flush()
    return n

def spin(path):
    """A thread left running: it counts into ``path`` as fast as it can, forever."""
    import threading

    def count():
        n = 0
        while True:
            n += 1
            if n % 10000 == 0:  # each count whole: written beside, renamed over
                with open(path + ".new", "w") as out:
                    out.write(str(n))
                os.replace(path + ".new", path)

    threading.Thread(target=count, daemon=True).start()

def limits():
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_CORE)
'''


@pytest.fixture
def student(tmp_path):
    folder = tmp_path / "ada"
    folder.mkdir()
    (folder / "work.py").write_text(SUBMISSION)
    (folder / "helpers.py").write_text("NAME = 'ada'\n")
    (folder / "notes.txt").write_text("not code")
    owner = sandbox.submission_owner("ada", folder)
    yield owner
    sandbox.close(owner)


def _call(owner, name, *args):
    """A function of the submission, loaded inside its sandbox by its copy's path."""
    return sandbox.run(owner, _inside, str(owner.inside(owner.seal.files + "/work.py")), name,
                       args, deadline=120)  # fmt: skip


def _inside(path, name, args):
    import importlib.util

    spec = importlib.util.spec_from_file_location("work", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)(*args)


def test_a_sandbox_holds_a_copy_of_its_owners_python_files_and_a_clean_environment(student):
    cwd, first, listed, env = _call(student, "where")
    assert cwd == str(student.folder) == first
    assert listed == ["helpers.py", "work.py"]  # Python files only, copied
    assert env["HOME"] == cwd and "JACBENCH_SANDBOX" not in env
    assert not (set(env) - {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONPATH",
                            "PYTHONDONTWRITEBYTECODE", "JACBENCH_CACHE_DIR", "JACBENCH_TUNING",
                            "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS"})  # fmt: skip
    assert _call(student, "signals") == [True, True] or _call(student, "signals") == (True, True)
    (open_files, _), (core, _) = _call(student, "limits")
    assert open_files == 4096 and core == 0


def test_two_students_each_import_their_own_helpers(tmp_path, student):
    bob = tmp_path / "bob"
    bob.mkdir()
    (bob / "work.py").write_text(SUBMISSION)
    (bob / "helpers.py").write_text("NAME = 'bob'\n")
    other = sandbox.submission_owner("bob", bob)
    try:
        assert _call(student, "helper_name") == "ada"
        assert _call(other, "helper_name") == "bob"
    finally:
        sandbox.close(other)


@pytest.mark.parametrize("trick", ["kill_parent", "kill_group"])
def test_a_student_that_kills_its_parent_or_its_group_ends_only_its_own_worker(student, trick):
    """Its parent is the sandbox's launcher, its group its own session: jacbench (this test's
    process) lives on, and the student's next request gets a fresh worker."""
    launched = sandbox.sandbox(student)
    _call(student, "where")
    first = launched._launched.launcher
    try:
        _call(student, trick)
    except WorkerFailed as failure:
        assert failure.mistake.value == "crash"
    # The launcher ends with its worker, or was killed; the worker may answer the trick's
    # call before its parent's death reaches it (PDEATHSIG), so wait for the launcher.
    first.wait(timeout=30)
    first = first.pid
    assert _call(student, "helper_name") == "ada"
    assert launched._launched.launcher.pid != first  # a fresh worker behind a fresh launcher


def test_every_process_a_sandbox_started_is_gone_when_it_closes(student, tmp_path):
    pid = _call(student, "detach", str(tmp_path / "pid"))
    assert Path(f"/proc/{pid}").exists()
    sandbox.close(student)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # killed: its zombie is reaped by whoever adopted it
    status = Path(f"/proc/{pid}/stat")
    assert not status.exists() or status.read_text().split(")")[1].split()[0] == "Z"
    assert not student.folder.exists()


def test_output_is_kept_up_to_its_cap(student):
    assert _call(student, "chatter", 3 * sandbox.OUTPUT_CAP) == 3 * sandbox.OUTPUT_CAP
    text = sandbox.close(student)
    assert text.count("x") == sandbox.OUTPUT_CAP
    assert f"{2 * sandbox.OUTPUT_CAP} more bytes of output cut" in text


def _count(path):
    """The spinning thread's count, once it has written one."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError("the thread never counted")


@pytest.mark.parametrize("how", ["as found", "without a cgroup"])
def test_a_paused_sandbox_runs_nothing_until_the_block_ends(student, tmp_path, how):
    """What jacbench times beside a student (its peers) competes with nothing the student
    left running: its cgroup frozen, or (without one) each of its processes stopped."""
    counter = tmp_path / "count"
    _call(student, "spin", str(counter))
    if how == "without a cgroup":
        sandbox.sandbox(student)._launched.cgroup = None
    first = _count(counter)
    with sandbox.paused(student):
        time.sleep(0.1)  # a write under way when the pause began has landed
        frozen = _count(counter)
        time.sleep(0.5)
        assert _count(counter) == frozen
    deadline = time.monotonic() + 30
    while _count(counter) == frozen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _count(counter) > frozen >= first


def test_a_sandbox_user_that_does_not_exist_is_refused():
    with pytest.raises(ValueError, match="there is no user 'no-such-user'"):
        sandbox.use_user("no-such-user")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_as_root_code_that_cannot_run_as_its_user_is_said_to_run_as_root(student):
    identity, refused = sandbox._identity("nobody")
    if identity is not None:
        pytest.skip("this machine's Python is readable by nobody: the switch happens")
    _call(student, "where")
    assert refused in sandbox.unsealed_warning()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_as_root_user_code_runs_as_nobody_where_nobody_can_read_python(student):
    identity, refused = sandbox._identity("nobody")
    if identity is None:
        pytest.skip(f"this machine's Python is not readable by nobody: {refused}")
    env = _call(student, "where")[3]
    assert env["HOME"] == str(student.folder)
    uid = sandbox.run(student, os.getuid, deadline=60)
    assert uid == identity[0] != 0


def test_jacbench_survives_a_sigterm_sent_to_a_sandbox_session(student):
    _call(student, "where")
    worker = sandbox.sandbox(student)._launched
    assert worker is not None
    os.killpg(worker.worker_pid, signal.SIGTERM)  # what the student's killpg(0) reaches
    with pytest.raises(WorkerFailed):
        _call(student, "where")
    assert sys.modules["jacbench"] is not None
