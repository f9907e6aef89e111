"""Which code this is: a digest of the package's source files, for image tags and cache keys.

KFP's cache key includes each task's image, and nodes do not pull a tag they already have, so the
image tag must change whenever the code does: it is ``<version>-<first 12 hex of the digest>``.
The digest covers every source file of ``longalign`` and of its ``components`` and ``pipelines``
subpackages (``.py``, and the package data: prompts, presets), by its path inside the installed
package, so a checkout and an installed copy (the image) of the same code give the same digest.
Compiled KFP YAML and Markdown are left out: they are outputs of the code, not code.

Runs without the package's dependencies, so the image build can compute its tag first::

    python3 longalign/codeid.py --tag      # e.g. 0.1.0-3f2a1c9b7d4e
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import re
from pathlib import Path

SUFFIXES = (".py", ".txt", ".json", ".jinja", ".yaml", ".yml")
SHORT = 12
_HERE = Path(__file__).resolve().parent


def source_roots(package_dir: Path = _HERE) -> dict[str, Path]:
    """Installed prefix -> folder: ``longalign/components`` and ``longalign/pipelines`` are
    subfolders of an installed package and the top-level ``components/`` and ``pipelines/``
    folders of a checkout (setup.cfg's package_dir)."""
    roots = {"longalign": package_dir}
    for sub in ("components", "pipelines"):
        installed = package_dir / sub
        roots[f"longalign/{sub}"] = installed if installed.is_dir() else package_dir.parent / sub
    return roots


def source_files(package_dir: Path = _HERE) -> dict[str, Path]:
    """Installed path -> file, for every file the digest covers."""
    roots = source_roots(package_dir)
    out: dict[str, Path] = {}
    for prefix, root in roots.items():
        nested = [r for p, r in roots.items() if p != prefix and r.is_relative_to(root)]
        for path in root.rglob("*"):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix not in SUFFIXES:
                continue
            if any(path.is_relative_to(r) for r in nested):
                continue  # counted under its own prefix
            compiled = prefix != "longalign" and path.suffix in (".yaml", ".yml")
            if not compiled:
                out[f"{prefix}/{path.relative_to(root).as_posix()}"] = path
    return out


def digest_of(files: dict[str, bytes]) -> str:
    """sha256 over the sorted (path, sha256(content)) pairs."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).hexdigest().encode() + b"\n")
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def code_digest(package_dir: Path = _HERE) -> str:
    """The digest of this package's sources (computed once per process)."""
    return digest_of({name: path.read_bytes() for name, path in source_files(package_dir).items()})


def version(package_dir: Path = _HERE) -> str:
    text = (package_dir / "__init__.py").read_text()
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else "0"


def image_tag(package_dir: Path = _HERE) -> str:
    """``<version>-<12 hex of the code digest>``: the tag images are built and pulled with."""
    return f"{version(package_dir)}-{code_digest(package_dir)[:SHORT]}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the digest of longalign's sources.")
    parser.add_argument("--tag", action="store_true", help="print the image tag instead")
    opts = parser.parse_args(argv)
    print(image_tag() if opts.tag else code_digest())


if __name__ == "__main__":
    main()
