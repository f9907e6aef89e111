"""Import structure: no circles inside the library, and only the orchestration package uses kfp.

Imports are read from the source (ast), including those inside functions, which hide a circle
from Python but not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "longalign"
KFP_ALLOWED = "longalign.orchestrate"  # the package (local runs, transcript, compile, submit)


def _module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """Every module ``name`` imports (anywhere in its source)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if f"{base}.{alias.name}" in MODULES)
    return found


def test_no_import_circles_in_the_library():
    graph = {m: {i for i in imports(m) if i in MODULES and i != m} for m in MODULES}
    circles = []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[module]):
            if nxt in path:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt], done)
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module], done)
    # a package's __init__ importing its own modules is how packages export names, not a circle
    circles = [c for c in circles if not any(
        a.startswith(b + ".") or b.startswith(a + ".")
        for a, b in zip(c.split(" -> "), c.split(" -> ")[1:]))]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_only_the_orchestration_module_imports_kfp():
    users = sorted(m for m in MODULES if any(i == "kfp" or i.startswith("kfp.") for i in imports(m)))
    outside = [m for m in users if m != KFP_ALLOWED and not m.startswith(KFP_ALLOWED + ".")]
    assert not outside, f"modules importing kfp outside {KFP_ALLOWED}: {outside}"
    assert users, "the orchestration module is expected to use kfp"


def test_every_package_is_listed_for_installation():
    """setup.cfg lists packages by name: a new subpackage missing there is absent from a real
    (non-editable) install, such as the images', while an editable install hides it."""
    import configparser

    root = LIBRARY.parent
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    on_disk = {_module_name(p) for p in LIBRARY.rglob("__init__.py") if "__pycache__" not in p.parts}
    for folder in ("components", "pipelines"):  # installed as longalign.components, .pipelines
        on_disk |= {"longalign." + ".".join(p.parent.relative_to(root).parts)
                    for p in (root / folder).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert "longalign.cli" in on_disk
    assert not on_disk - listed, f"packages missing from setup.cfg: {sorted(on_disk - listed)}"
