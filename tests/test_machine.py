"""What the machine did beside a measurement: other work, told apart from this process's."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from jacbench.measure import machine

# A child that keeps one core busy for 0.6 s of its own CPU time, then ends.
BURN = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"


def test_a_child_that_ended_is_this_process_work_not_other_work():
    # A worker replaced after its deadline, or a sandbox closed, ends inside the window
    # of a measurement: its CPU time is this process's own, live or waited for.
    others = machine.OtherWork()
    subprocess.run([sys.executable, "-c", BURN], check=True)
    found = others.cores()
    if found is None:
        pytest.skip("this system does not expose /proc/stat")
    assert found < 0.3  # counted as another's, it would read about one core's worth


def test_other_work_counts_a_process_that_is_not_this_ones(tmp_path):
    # A shell that starts the burner in the background and ends: the burner is orphaned,
    # no descendant of this process, as another user's job is.
    script = tmp_path / "burn.py"
    script.write_text(BURN)
    others = machine.OtherWork()
    started = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" "{script}" >/dev/null 2>&1 & echo $!'],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    orphan = Path("/proc") / started.stdout.strip() / "stat"
    deadline = time.monotonic() + 30
    while _running(orphan) and time.monotonic() < deadline:
        time.sleep(0.05)
    found = others.cores()
    if found is None:
        pytest.skip("this system does not expose /proc/stat")
    assert found > 0.3


def _running(stat: Path) -> bool:
    """Whether the process of this /proc stat file runs (not ended, not a zombie)."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
