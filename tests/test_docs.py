"""The documentation names what the code defines: every column, status and module."""

from pathlib import Path

from jacbench.measure.rows import COLUMNS, SAMPLE_COLUMNS, Status

DOCS = Path(__file__).parent.parent / "docs"


def _section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _first_cells(section: str) -> list[str]:
    return [line.split("`")[1] for line in section.splitlines() if line.startswith("| `")]


def test_results_doc_describes_every_column_and_status_in_order():
    text = (DOCS / "results.md").read_text()
    assert _first_cells(_section(text, "results.csv")) == list(COLUMNS)
    assert _first_cells(_section(text, "Statuses")) == [s.value for s in Status]
    samples = _section(text, "samples.csv")
    assert [c for c in SAMPLE_COLUMNS if f"`{c}`" not in samples] == []


def test_design_notes_list_every_module():
    text = (DOCS / "design.md").read_text()
    package = Path(__file__).parent.parent / "jacbench"
    modules = sorted(p.name for p in package.rglob("*.py") if p.name != "__init__.py")
    assert len(modules) > 30
    assert [m for m in modules if f"  {m} " not in text] == []
    layers = sorted(p.parent.name for p in package.glob("*/__init__.py"))
    assert [layer for layer in layers if f"\n{layer} " not in text] == []


def test_the_docs_array_script_is_the_tested_one():
    """The clusters guide's sbatch script is examples/slurm/sweep.sh (run on a real cluster by
    tests/test_slurm.py), its comment header aside."""
    root = Path(__file__).parent.parent
    readme = (DOCS / "clusters.md").read_text()
    block = readme.split("```bash\n#!/bin/bash\n#SBATCH --job-name=jacbench-sweep", 1)[1]
    shown = ["#SBATCH --job-name=jacbench-sweep", *block.split("```", 1)[0].strip().splitlines()]
    script = (root / "examples" / "slurm" / "sweep.sh").read_text().splitlines()
    kept = [line for line in script if not line.startswith("# ") and line != "#!/bin/bash"]
    assert shown == kept


def test_the_sweeps_guide_names_every_preset():
    from jacbench.runs.grid import PRESETS

    readme = (DOCS / "sweeps.md").read_text()
    presets = readme.split("`jacbench run` presets:", 1)[1].split("`jacbench --version`", 1)[0]
    assert [name for name in PRESETS if f"`{name}`" not in presets] == []
