"""A CPU run leaves no shared memory behind: DeepSpeed's CPU all-reduce creates a 66 MB
/dev/shm file per rank and never removes it (hundreds of runs filled a 24 GB machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
from genos_cli.train.runtime import init_distributed, shm_buffer_path
init_distributed()
path = shm_buffer_path(0)
print(path, path.exists())
"""


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_the_deepspeed_shm_buffer_is_removed_at_exit() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                             "LOCAL_SIZE", "MASTER_ADDR",
                                                             "MASTER_PORT")}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]  # fmt: skip
    name, existed = out.rsplit(" ", 1)
    if existed != "True":
        pytest.skip("DeepSpeed's shm_comm op is not available here: it creates no file")
    assert Path(name).name.startswith("deepspeed_allreduce_buffer_")
    assert not Path(name).exists()
