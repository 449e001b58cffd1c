"""Built-in checks, one module per concern; importing this package registers them in run order."""

# imported for registration; the order here is the checks' run order, so it is not sorted (I001)
from detbench.envcheck.checks import (  # noqa: F401, I001
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
