#!/usr/bin/env python3
"""Fail the image build when the base image is not the torch line the build arguments name.

The one Dockerfile builds every image from build arguments (docker/images/<image>.env): the base image, the
image's CUDA tag (``cu118``: the base's torch must be built for CUDA 11.8) and the torch/torchvision pair the
image ships, which noxfile.py's session of that line tests on a CPU. A wrong or stale base would otherwise
build an image whose name, results and tests describe another torch. An empty argument is not checked.

    python docker/check-base.py --cuda-tag cu118 --torch 2.7.1 --torchvision 0.22.1
"""

from __future__ import annotations

import argparse
import re
import sys


def public(version: str) -> str:
    """``2.7.1+cu118`` -> ``2.7.1`` (the local label names the build, not the release)."""
    return version.split("+", 1)[0]


def problems(cuda_tag: str, want_torch: str, want_torchvision: str,
             torch_version: str, torchvision_version: str, torch_cuda: str | None) -> list[str]:
    """What differs between the base (its torch, torchvision and torch's CUDA) and the build arguments."""
    found = []
    if want_torch and public(torch_version) != want_torch:
        found.append(f"TORCH_VERSION={want_torch} but the base has torch {torch_version}")
    if want_torchvision and public(torchvision_version) != want_torchvision:
        found.append(f"TORCHVISION_VERSION={want_torchvision} but the base has torchvision {torchvision_version}")
    if re.fullmatch(r"cu\d{3,}", cuda_tag):
        built_for = "cu" + torch_cuda.replace(".", "") if torch_cuda else None
        if built_for != cuda_tag:
            found.append(f"DETBENCH_CUDA={cuda_tag} but the base's torch is built for "
                         f"{'CUDA ' + torch_cuda if torch_cuda else 'no CUDA'}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--cuda-tag", default="", help="the image's CUDA tag, e.g. cu118 (other forms: not checked)")
    parser.add_argument("--torch", default="", help="the torch release the base must have, e.g. 2.7.1")
    parser.add_argument("--torchvision", default="", help="the torchvision release the base must have")
    args = parser.parse_args(argv)

    import torch  # noqa: PLC0415  (the base's: imported after the arguments parse)
    import torchvision  # noqa: PLC0415

    print(f"base: torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision {torchvision.__version__}")
    found = problems(args.cuda_tag, args.torch, args.torchvision,
                     torch.__version__, torchvision.__version__, torch.version.cuda)
    for line in found:
        print(f"check-base: {line}", file=sys.stderr)
    if found:
        print("check-base: pass the build arguments of one image together: docker/images/<image>.env, "
              "docs/containers.md", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
