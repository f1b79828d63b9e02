"""docs/ matches the code: the hook-point page is regenerated and compared; the architecture page names
every module it describes."""

from __future__ import annotations

from pathlib import Path

from workbench.families.hook_points import render

ROOT = Path(__file__).resolve().parents[2]


def test_hook_points_page_is_current() -> None:
    assert (ROOT / "docs/hook_points.md").read_text() == render(), "run `make docs`"


def test_architecture_page_names_every_module() -> None:
    text = (ROOT / "docs/architecture.md").read_text()
    modules = [
        p.relative_to(ROOT).as_posix() for p in (ROOT / "workbench").rglob("*.py") if p.name != "__init__.py"
    ]
    missing = [m for m in modules if m not in text and m != "workbench/__main__.py"]
    assert not missing, f"docs/architecture.md does not describe {missing}"


def test_probe_catalogue_is_current() -> None:
    from probes.catalogue import render as catalogue

    assert (ROOT / "docs/probes/index.md").read_text() == catalogue(), "run `make docs`"


def test_every_image_and_page_link_in_the_docs_resolves() -> None:
    import re

    broken = []
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
