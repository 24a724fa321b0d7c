"""MkDocs hook: the site also serves the committed run folders' summaries and plots and the
examples, so the pages link to them where they live in the repository (results/, examples/)
rather than to copies kept in docs/."""

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
SERVED = ("results/*/summary.md", "results/*/*.png", "examples/*.py", "examples/*/*.sh")


def on_files(files, config):
    for pattern in SERVED:
        for path in sorted(ROOT.glob(pattern)):
            uri = path.relative_to(ROOT).as_posix()
            files.append(File(uri, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
