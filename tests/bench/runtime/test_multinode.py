"""Two torchrun agents on 127.0.0.1 acting as two nodes (c10d rendezvous, one gloo process each) run a
tiny DDP cell end to end: the multi-node launch docs/distributed.md describes, without a second machine."""

from __future__ import annotations

import socket
import subprocess
import sys

from detbench.bench.runtime.protocol import GroupProgress
from detbench.bench.runtime.request import GroupRequest
from detbench.envcheck.isolate import child_env
from tests.bench.runtime.torchrun_helpers import fast_options, tiny


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def agent(node_rank: int, port: int, request, result) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--node-rank", str(node_rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "--rdzv-id", "detbench-two-node-test", "-m", "detbench.bench.runtime.rank", str(request), str(result)]


def test_two_torchrun_agents_as_two_nodes_run_a_ddp_cell(tmp_path):
    request, result = tmp_path / "request.json", tmp_path / "result.jsonl"
    GroupRequest([tiny("train")], fast_options()).write(request)
    port = free_port()
    # TMPDIR: each agent's torchelastic_* log folder goes with the test
    agents = [subprocess.Popen(agent(node, port, request, result), env={**child_env(), "TMPDIR": str(tmp_path)},
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True) for node in (0, 1)]
    try:
        outputs = [a.communicate(timeout=90)[0].decode(errors="replace") for a in agents]
    finally:
        for a in agents:
            a.kill()
    assert [a.returncode for a in agents] == [0, 0], outputs
    progress = GroupProgress.read(result)
    assert progress.done and list(progress.final) == [tiny("train").id]
    cell = progress.results[tiny("train").id]
    assert cell.status == "ok", cell.reason
    stats = cell.distributed.to_dict()
    assert stats["nnodes"] == 2 and stats["world_size"] == 2 and stats["parallelism"] == "ddp"
    assert sorted(r["node_rank"] for r in stats["ranks"]) == [0, 1]
    assert all(r["local_rank"] == 0 for r in stats["ranks"])
    assert "--nnodes 2 --nproc-per-node 1" in stats["launcher"]
