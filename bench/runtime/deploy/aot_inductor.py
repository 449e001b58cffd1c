"""``aot-inductor``: ``torch.export`` then ``torch._inductor.aoti_compile_and_package``, loaded back with
``torch._inductor.aoti_load_package`` as a deployment would (torch >= 2.6).

Detectors' post-processing has data-dependent shapes (boxes kept after the threshold and NMS), which torch.export
cannot trace; then, as deployments do, the network up to the heads' outputs is exported (the backbone and the dense
head: ``head`` of single-stage detectors, ``rpn.head`` of the R-CNN family) and the rest (anchors, box decoding,
NMS, the R-CNN's ROI heads) runs eagerly around the loaded pieces. :attr:`Artifact.exported` states the split."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from detbench.bench.runtime.deploy.base import Artifact, NotSupportedError, Runner, first_line, load_eager, save_eager

# the network's pieces, first found first: the backbone (and FPN), then the dense head that feeds post-processing
SPLIT_PIECES = (("backbone",), ("head", "rpn.head"))


class _Loaded(torch.nn.Module):
    """A loaded AOTInductor package standing in for the submodule it was exported from."""

    def __init__(self, runner: Any) -> None:
        super().__init__()
        self.runner = runner

    def forward(self, *args: Any) -> Any:
        return self.runner(*args)


class AotInductor:
    name = "aot-inductor"
    imports: tuple[str, ...] = ("torch._inductor",)  # what a serving process imports before loading

    def unavailable(self) -> str | None:
        # a submodule torch does not import by itself (imported by name: a local `import torch._inductor` would
        # rebind this module's torch, tests/test_imports.py)
        inductor = importlib.import_module("torch._inductor")
        if not hasattr(inductor, "aoti_compile_and_package"):
            return f"torch._inductor.aoti_compile_and_package is not in torch {torch.__version__} (2.6 or later)"
        return None

    def export(self, model: torch.nn.Module, inputs: Any, folder: Path) -> Artifact:
        try:
            program = torch.export.export(model, (inputs,), strict=False)
        except Exception as exc:  # noqa: BLE001 - not exportable whole: export the network, post-processing eager
            whole_error = first_line(exc)
        else:
            path = _package(program, folder / "model.pt2")
            return Artifact(self.name, path, exported="whole model (torch.export, strict=False)")
        pieces = _split(model)
        if not pieces:
            raise NotSupportedError(f"whole model: {whole_error}; and no backbone/head to export apart")
        args = _capture_args(model, inputs, pieces)
        paths: dict[str, str] = {}
        for name in pieces:
            try:
                program = torch.export.export(model.get_submodule(name), args[name], strict=False)
            except Exception as exc:  # the network itself does not export: not supported
                raise NotSupportedError(f"{name}: {first_line(exc)}") from exc
            paths[name] = _package(program, folder / f"{name}.pt2").name
        exported = (f"split: {' + '.join(pieces)} exported (AOTInductor); the rest (transform, anchors, box decoding, "
                    "NMS" + (", ROI heads" if "rpn.head" in pieces else "") + ") eager")
        return Artifact(self.name, folder, exported=exported, eager_path=save_eager(model, folder / "eager_parts.pt"),
                        pieces=paths, notes={"whole_model_export": whole_error})

    def load(self, artifact: Artifact, reference: Any, device: torch.device) -> Runner:
        aoti_load_package = importlib.import_module("torch._inductor").aoti_load_package
        if not artifact.pieces:
            return aoti_load_package(str(artifact.path))
        model = load_eager(artifact, device)
        for name, file in artifact.pieces.items():
            parent, _, leaf = name.rpartition(".")
            loaded = _Loaded(aoti_load_package(str(artifact.path / file)))
            setattr(model.get_submodule(parent) if parent else model, leaf, loaded)
        return model


def _package(program: Any, path: Path) -> Path:
    try:
        return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(path)))
    except Exception as exc:  # inductor could not compile what exported: not supported, with its line
        raise NotSupportedError(f"aoti_compile_and_package: {first_line(exc)}") from exc


def _split(model: torch.nn.Module) -> list[str]:
    names = {n for n, _ in model.named_modules()}
    return [next(n for n in options if n in names) for options in SPLIT_PIECES if any(n in names for n in options)]


def _capture_args(model: torch.nn.Module, inputs: Any, pieces: list[str]) -> dict[str, tuple[Any, ...]]:
    """Each piece's positional arguments in one eager forward (the shapes its artifact is compiled for)."""
    seen: dict[str, tuple[Any, ...]] = {}
    hooks = [model.get_submodule(name).register_forward_pre_hook(
        lambda _m, args, name=name: seen.setdefault(name, args)) for name in pieces]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return seen
