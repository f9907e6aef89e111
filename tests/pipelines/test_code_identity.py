"""Image tags and cache keys follow the code: any source change gives new tags (so KFP's cache key
changes and nodes pull the new image), a checkout and an installed copy of the same code agree,
compiled YAML names the code it came from, and compiling twice gives identical bytes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from longalign import __version__
from longalign.codeid import code_digest, digest_of, image_tag, source_files
from longalign.components.common import IMAGE, IMAGE_CUDA

ROOT = Path(__file__).resolve().parents[2]


def test_every_source_file_is_in_the_digest_and_changing_any_changes_it():
    files = source_files()
    names = set(files)
    assert {"longalign/cli/__init__.py", "longalign/codeid.py", "longalign/components/common.py",
            "longalign/pipelines/pipeline.py", "longalign/training/launcher/jobs.py"} <= names
    assert not any(n.endswith((".md", "component.yaml", "launcher.yaml", "pipeline.yaml")) for n in names)
    py = {p.relative_to(ROOT / "longalign").as_posix() for p in (ROOT / "longalign").rglob("*.py")
          if "__pycache__" not in p.parts}
    assert {f"longalign/{p}" for p in py} <= names  # every module under longalign/
    contents = {name: path.read_bytes() for name, path in files.items()}
    base = digest_of(contents)
    assert base == code_digest()
    for name in contents:
        assert digest_of({**contents, name: contents[name] + b"\n"}) != base, name
    renamed = dict(contents)
    renamed["longalign/moved.py"] = renamed.pop("longalign/io.py")
    assert digest_of(renamed) != base


def test_images_carry_the_version_and_the_code_digest():
    assert image_tag() == f"{__version__}-{code_digest()[:12]}"
    assert IMAGE == f"ghcr.io/longalign/longalign:{image_tag()}"
    assert IMAGE_CUDA == f"ghcr.io/longalign/longalign-cuda:{image_tag()}"


def _installed_copy(dest: Path) -> Path:
    """The package laid out as pip installs it (components/ and pipelines/ inside longalign/)."""
    pkg = dest / "longalign"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "longalign", pkg, ignore=ignore)
    shutil.copytree(ROOT / "components", pkg / "components", ignore=ignore)
    shutil.copytree(ROOT / "pipelines", pkg / "pipelines", ignore=ignore)
    return pkg


def _compiled_image(site: Path, out: Path) -> str:
    """Compile the training component with the package at ``site`` in a fresh interpreter; the
    image is part of KFP's cache key."""
    code = ("import sys; from kfp import compiler; import longalign; "
            "assert longalign.__file__.startswith(sys.argv[1]), longalign.__file__; "
            "from longalign.components.registry import COMPONENTS; "
            "compiler.Compiler().compile(COMPONENTS['training'][2], sys.argv[2])")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("LONGALIGN_IMAGE_REPOSITORY", None)
    subprocess.run([sys.executable, "-c", code, str(site), str(out)], check=True, env=env,
                   cwd=site, timeout=300)
    (executor,) = yaml.safe_load(out.read_text())["deploymentSpec"]["executors"].values()
    return executor["container"]["image"]


def test_changing_a_library_file_changes_the_compiled_components_cache_key(tmp_path):
    site = tmp_path / "site"
    pkg = _installed_copy(site)
    assert code_digest(pkg) == code_digest()  # an installed copy of this code: the same digest
    before = _compiled_image(site, tmp_path / "before.yaml")
    assert before == IMAGE_CUDA
    deep = pkg / "training" / "loss.py"  # a module the component never imports at compile time
    deep.write_text(deep.read_text() + "\n# a change\n")
    after = _compiled_image(site, tmp_path / "after.yaml")
    changed = digest_of({name: path.read_bytes() for name, path in source_files(pkg).items()})
    assert after != before and after.endswith(f"-{changed[:12]}")


def test_compile_records_the_code_and_two_compiles_are_identical(tmp_path):
    outputs = []
    for seed in ("1", "2"):  # different hash seeds: dict and map orders differ between processes
        out = tmp_path / f"p{seed}.yaml"
        subprocess.run([sys.executable, "-m", "longalign.cli", "compile", "-o", str(out),
                        "--pipeline", "longalign-multinode"], check=True, timeout=300,
                       env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    first = outputs[0].decode().splitlines()[0]
    assert first == (f"# Compiled by longalign {image_tag()} from sources with code digest "
                     f"{code_digest()} (longalign/codeid.py).")


def test_pip_installed_code_has_the_checkouts_digest(tmp_path):
    """What the image build installs has the digest the compile used: every file the digest
    covers is installed (package data included), and nothing else counts."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("longalign", "components", "pipelines"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-compile", "--target", str(tmp_path / "site"), str(src)],
                   check=True, capture_output=True, timeout=600)
    installed = tmp_path / "site" / "longalign"
    assert set(source_files(installed)) == set(source_files())
    assert digest_of({n: p.read_bytes() for n, p in source_files(installed).items()}) == code_digest()
