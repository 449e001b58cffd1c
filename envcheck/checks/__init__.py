"""Built-in checks, one module per concern; importing this package registers them in run order."""

from envcheck.checks import (  # noqa: F401 - imported for registration
    torch_pairing,
    driver,
    visibility,
    arch,
    cudnn,
    tv_ops,
    nccl,
    health,
    host,
    speed,
)
