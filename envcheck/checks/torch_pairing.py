"""torch <-> torchvision pairing: the versions match, and torchvision's compiled ops load and run."""

from __future__ import annotations

from detbench.envcheck import tables
from detbench.envcheck.check import register_check
from detbench.envcheck.result import Outcome, failed, passed


def _wheel_index(torch_version: str) -> str:
    local = torch_version.partition("+")[2]  # 'cu130', 'cpu', ''
    return f" --index-url https://download.pytorch.org/whl/{local}" if local else ""


def install_command(torch_version: str, torchvision_minor: str) -> str:
    return f'pip install "torchvision=={torchvision_minor}.*"{_wheel_index(torch_version)}'


def run_nms_op() -> None:
    """The call whose failure is the classic symptom of a mismatched pair."""
    import torch  # noqa: PLC0415

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = torch.ops.torchvision.nms(boxes, scores, 0.5)
    if keep.tolist() != [0, 2]:
        raise RuntimeError(f"torchvision::nms returned {keep.tolist()}, expected [0, 2]")


@register_check("torch_pairing", "torch / torchvision pairing")
def check_torch_pairing(ctx) -> Outcome:
    try:
        import torch  # noqa: PLC0415
    except ImportError as exc:
        return failed(f"torch does not import: {exc}", "pip install torch torchvision "
                      "--index-url https://download.pytorch.org/whl/cu130 (pick the CUDA your driver supports)")

    torch_version = torch.__version__
    expected = tables.expected_torchvision(torch_version)
    measured = {"torch": torch_version, "torchvision_expected": expected}
    if tables.parse_version(torch_version) < tables.parse_version(tables.MIN_TORCH):
        return failed(f"torch {torch_version} is older than the supported {tables.MIN_TORCH}",
                      f'pip install "torch>={tables.MIN_TORCH}" and the matching torchvision', **measured)
    try:
        import torchvision  # noqa: PLC0415
    except (ImportError, RuntimeError, OSError) as exc:
        return failed(f"torchvision does not import: {exc}", install_command(torch_version, expected or "0.X"),
                      torchvision=None, **measured)
    tv_version = torchvision.__version__
    measured["torchvision"] = tv_version
    tv_minor = ".".join(tv_version.split("+")[0].split(".")[:2])
    if expected and tv_minor != expected:
        return failed(f"torch {torch_version} needs torchvision {expected}.x, found {tv_version}",
                      install_command(torch_version, expected), **measured)
    try:
        run_nms_op()
    except (RuntimeError, AttributeError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return failed(f"torchvision's compiled ops do not run: {message}",
                      f"reinstall a matching pair from the same index: pip install --force-reinstall "
                      f'"torch=={torch_version.split("+")[0]}" "torchvision=={expected or tv_minor}.*"'
                      f"{_wheel_index(torch_version)}",
                      nms_error=message, **measured)
    return passed(f"torch {torch_version} + torchvision {tv_version}; torchvision::nms runs", **measured)
