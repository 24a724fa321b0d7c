"""The documentation names what the code defines: every column, status and module."""

from pathlib import Path

from jacbench.rows import COLUMNS, Status

DOCS = Path(__file__).parent.parent / "docs"


def test_results_doc_describes_every_column_and_status_in_order():
    text = (DOCS / "results.md").read_text()
    documented = [line.split("`")[1] for line in text.splitlines() if line.startswith("| `")]
    assert documented[: len(COLUMNS)] == list(COLUMNS)
    statuses = len(COLUMNS) + len(Status)
    assert documented[len(COLUMNS) : statuses] == [s.value for s in Status]


def test_design_notes_list_every_module():
    text = (DOCS / "design.md").read_text()
    modules = sorted(p.name for p in (Path(__file__).parent.parent / "jacbench").glob("*.py"))
    assert [m for m in modules if f"  {m} " not in text] == []
