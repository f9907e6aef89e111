"""Compiling: the pipelines and components to KFP IR YAML (the same code gives the same bytes), and
the export of every component with its README and metadata for reuse by platform teams."""

from __future__ import annotations

import ast
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from longalign.orchestrate import _pipeline

DEFAULT_PIPELINE_YAML = Path("pipelines") / "pipeline.yaml"


def compile_pipeline(output: str | os.PathLike = DEFAULT_PIPELINE_YAML, *,
                     pipeline: str = "longalign", parallelism: int | None = None) -> Path:
    """Compile a pipeline (``longalign``, ``longalign-multinode``, ...) to KFP IR YAML (what the
    KFP UI uploads). ``parallelism``: the sharded pipelines' pods at a time per ParallelFor (0: no
    limit), which KFP fixes at compile time."""
    if parallelism is None:
        return _compile(_pipeline(pipeline), Path(output))
    from longalign.errors import UserError
    from longalign.pipelines import WITH_PARALLELISM

    if pipeline not in WITH_PARALLELISM:
        raise UserError(f"--parallelism applies to {' and '.join(WITH_PARALLELISM)}, not "
                        f"{pipeline}")
    if parallelism < 0:
        raise UserError(f"--parallelism must be 0 (no limit) or more, not {parallelism}")
    return _compile(WITH_PARALLELISM[pipeline](parallelism), Path(output))


def _compile(function: Any, output: Path) -> Path:
    """Compile to ``output`` atomically, headed by a comment naming the code compiled (version and
    source digest, longalign/codeid.py); the same code always gives the same bytes."""
    from kfp import compiler

    from longalign.codeid import code_digest, image_tag

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp.yaml")
    compiler.Compiler().compile(function, str(tmp))
    header = (f"# Compiled by longalign {image_tag()} from sources with code digest "
              f"{code_digest()} (longalign/codeid.py).\n")
    tmp.write_text(header + _stable_comments(tmp.read_text()))
    os.replace(tmp, output)
    return output


_DEFAULT_COMMENT = re.compile(r"^(#\s+\S+: \w+ \[Default: )(.*)(\])$")


def _stable_comments(text: str) -> str:
    """KFP's comment header lists dict defaults in protobuf map order, which changes from one
    process to the next; print them with sorted keys so two compiles give identical bytes."""
    def ordered(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ordered(value[k]) for k in sorted(value)}
        return [ordered(v) for v in value] if isinstance(value, list) else value

    lines = []
    for line in text.split("\n"):
        match = _DEFAULT_COMMENT.match(line)
        if match and match.group(2)[:1] in "{[":
            try:
                line = f"{match.group(1)}{ordered(ast.literal_eval(match.group(2)))!r}{match.group(3)}"
            except (ValueError, SyntaxError):
                pass
        lines.append(line)
    return "\n".join(lines)


def compile_components(directory: str | os.PathLike = "components") -> list[Path]:
    """Compile every component to ``DIR/<folder>/<file>`` (``<stage>/component.yaml`` for the stages,
    ``training/launcher.yaml`` for the multi-node launcher), for reuse in other pipelines."""
    from longalign.components.registry import COMPONENTS

    written = []
    for folder, filename, component in COMPONENTS.values():
        written.append(_compile(component, Path(directory) / folder / filename))
    return written


def export_components(directory: str | os.PathLike) -> list[Path]:
    """Write each component for reuse by platform teams: ``DIR/<name>/component.yaml`` (the five
    stages and ``training_launcher``), its README and ``metadata.json`` (image, inputs/outputs,
    versions, checksum), plus ``DIR/index.json``. Returns every file written."""
    import hashlib
    import shutil

    import kfp
    import yaml

    from longalign import __version__
    from longalign.codeid import code_digest
    from longalign.components.registry import COMPONENTS

    directory = Path(directory)
    written, index = [], []
    with tempfile.TemporaryDirectory() as scratch:
        compiled = compile_components(scratch)
        for source, (name, (folder, _, component)) in zip(compiled, COMPONENTS.items()):
            path = directory / name / "component.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
            spec = yaml.safe_load(path.read_text())
            (definition,) = spec["components"].values()
            (executor,) = spec["deploymentSpec"]["executors"].values()
            metadata = {
                "name": name,
                "description": (component.description or "").split("\n\n")[0].strip(),
                "config_section": folder,
                "longalign_version": __version__,
                "code_digest": code_digest(),
                "kfp_version": kfp.__version__,
                "image": executor["container"]["image"],
                "inputs": _interface(definition.get("inputDefinitions", {})),
                "outputs": _interface(definition.get("outputDefinitions", {})),
                "component_yaml_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
            (path.parent / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
            readme = path.parent / "README.md"
            source_readme = Path(component.python_func.__code__.co_filename).parent / "README.md"
            if source_readme.resolve() != readme.resolve():
                shutil.copyfile(source_readme, readme)
            written += [path, readme, path.parent / "metadata.json"]
            index.append({"name": name, "component": f"{name}/component.yaml", "image": metadata["image"],
                          "sha256": metadata["component_yaml_sha256"]})
    (directory / "index.json").write_text(json.dumps(
        {"longalign_version": __version__, "code_digest": code_digest(), "components": index},
        indent=2) + "\n")
    return written + [directory / "index.json"]


def _interface(definitions: dict[str, Any]) -> dict[str, str]:
    """Name -> KFP type of a component's parameters and artifacts."""
    out = {name: p["parameterType"] for name, p in definitions.get("parameters", {}).items()}
    out.update({name: a["artifactType"]["schemaTitle"] for name, a in definitions.get("artifacts", {}).items()})
    return out
