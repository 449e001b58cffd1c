"""``detbench``: the benchmark matrix from any folder, once detbench is installed.

``detbench --models retinanet_resnet50_fpn --benchmark-json=run.json`` is ``pytest --pyargs bench`` with the same
options (``pytest bench/`` in a checkout does the same); every option of ``pytest bench/ --help`` applies.
"""

from __future__ import annotations

import sys

import pytest


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return int(pytest.main(["--pyargs", "bench", "-p", "no:cacheprovider", *args]))


if __name__ == "__main__":
    sys.exit(main())
