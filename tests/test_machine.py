"""What the machine did beside a measurement: other work, told apart from this process's."""

import subprocess
import sys
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


# Measures, in a fresh interpreter, other work while an orphan burns: a shell starts the
# burner in the background and ends, so the burner is no descendant of the interpreter, as
# another user's job is not. (In this process it could come back as a child: jacbench makes
# itself a subreaper while sandboxes run, so that orphans return to it.)
WATCH = """
import subprocess, sys, time
from pathlib import Path
from jacbench.measure import machine
from tests.test_machine import BURN, _running
script = Path(sys.argv[1])
script.write_text(BURN)
others = machine.OtherWork()
started = subprocess.run(
    ["sh", "-c", f'"{sys.executable}" "{script}" >/dev/null 2>&1 & echo $!'],
    capture_output=True, text=True, check=True,
)
orphan = Path("/proc") / started.stdout.strip() / "stat"
deadline = time.monotonic() + 30
while _running(orphan) and time.monotonic() < deadline:
    time.sleep(0.05)
print(others.cores())
"""


def test_other_work_counts_a_process_that_is_not_this_ones(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", WATCH, str(tmp_path / "burn.py")],
        capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    found = done.stdout.strip().splitlines()[-1]
    if found == "None":
        pytest.skip("this system does not expose /proc/stat")
    assert float(found) > 0.3


def _running(stat: Path) -> bool:
    """Whether the process of this /proc stat file runs (not ended, not a zombie)."""
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
