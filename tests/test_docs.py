"""The documentation: the generated pages agree with the results files, the README stays a landing page whose links
resolve, every relative link of the docs resolves, and code comments carry no history (issue numbers)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from bench_scripts import load_bench

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_generated_pages_match_the_results_files():
    stale = [str(p.relative_to(ROOT)) for p, text in load_bench("pages").rendered().items()
             if not p.exists() or p.read_text() != text]
    assert not stale, f"out of date (run `python -m bench.pages`): {stale}"


def test_the_demo_page_shows_every_demo_run():
    text = (ROOT / "docs" / "experiments" / "demo.md").read_text()
    runs = [p.name for p in (ROOT / "bench" / "results").glob("demo*.json") if not p.stem.endswith("metrics")]
    assert runs and all(f"`{name}`" in text for name in runs)


def _links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)  # not inside code blocks
    return [m.group(1) for m in LINK.finditer(text) if "://" not in m.group(1)]


def test_the_readme_is_a_landing_page():
    readme = ROOT / "README.md"
    lines = readme.read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    assert not [line for line in lines if re.search(r"demo_\w+\.json|issue \d+|the preset before", line)]
    missing = [link for link in _links(readme) if not (ROOT / link).exists()]
    assert not missing, missing


def test_every_relative_link_of_the_docs_resolves():
    missing = []
    for page in (ROOT / "docs").rglob("*.md"):
        missing += [f"{page.relative_to(ROOT)}: {link}" for link in _links(page)
                    if not (page.parent / link).resolve().exists()]
    assert not missing, missing


def test_code_comments_carry_no_issue_numbers():
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    found = [f"{f}:{i}" for f in files for i, line in enumerate((ROOT / f).read_text().splitlines(), 1)
             if re.search(r"issue \d", line, re.I)]
    assert not found, found
