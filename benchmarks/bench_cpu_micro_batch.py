"""`genos train --size small` on a CPU: the preset's micro-batch against the one genos picks.

    python benchmarks/bench_cpu_micro_batch.py [--steps 5] [--rounds 2]

The small preset's micro-batch (64 sequences of 512 tokens) is sized for GPUs. On a CPU,
without `--micro-batch-size`, genos takes the largest micro-batch of about 4,096 tokens that
divides the global batch (8 for the small preset) and accumulates the rest. Both runs train
the real E. coli genome with the same global batch (64 sequences, so that a step takes
seconds, not minutes: the micro-batch, not the global batch, sets the speed of a step) in
fresh processes, alternating over `--rounds` rounds; each keeps its fastest round and is
timed from its log's clock over the steps after 2 warm-up steps.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import WARMUP, prepare, steady

GLOBAL_BATCH = 64
SEQ = 512


def train(prefix: Path, steps: int, micro: int | None, tmp: Path) -> dict:
    """Per-step seconds of `genos train --size small` with `micro` (None: genos's choice)."""
    import itertools
    import json
    import subprocess

    out = Path(tempfile.mkdtemp(prefix="run-", dir=tmp))
    cmd = [
        sys.executable, "-m", "genos_cli", "train", "--size", "small", "--data-path", str(prefix),
        "--max-steps", str(steps), "--global-batch-size", str(GLOBAL_BATCH),
        "--log-interval", "1", "--eval-interval", str(10 * steps),
        "--save-interval", str(10 * steps), "--output-dir", str(out), "--num-gpus", "1",
    ]  # fmt: skip
    if micro is not None:
        cmd += ["--micro-batch-size", str(micro)]
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"))
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    plan = json.loads((out / "run_plan.json").read_text())
    lines = (out / "training_log.jsonl").read_text().splitlines()
    train = [r for r in map(json.loads, lines) if r["type"] == "train"]
    elapsed = [r["elapsed_s"] for r in train]
    seconds = [elapsed[0]] + [b - a for a, b in itertools.pairwise(elapsed)]
    micro = plan["config"]["training"]["micro_batch_size"]
    return {"seconds": seconds, "micro": micro, "peak_mb": max(r["mem_peak_mb"] for r in train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        prefix = prepare(tmp)
        preset, chosen = [], []
        for _ in range(args.rounds):
            preset.append(train(prefix, args.steps, 64, tmp))
            chosen.append(train(prefix, args.steps, None, tmp))
    timed = (args.steps - WARMUP) * GLOBAL_BATCH * SEQ
    print(
        f"genos train --size small, global batch {GLOBAL_BATCH} x {SEQ} tokens, "
        f"{os.cpu_count()} CPUs, {args.steps} steps ({WARMUP} warm-up), best of {args.rounds}"
    )
    print(f"{'micro-batch':<26}{'tokens/s':>10}{'peak MB':>9}  rounds (tokens/s)")
    rates = []
    for runs, why in ((preset, "the preset's"), (chosen, "genos's choice")):
        rates.append(timed / min(steady(r) for r in runs))
        label = f"{runs[0]['micro']} ({why})"
        each = ", ".join(f"{timed / steady(r):,.0f}" for r in runs)
        peak = max(r["peak_mb"] for r in runs)
        print(f"{label:<26}{rates[-1]:>10,.0f}{peak:>9,.0f}  {each}")
    before, after = rates
    print(f"speed-up: {after / before:.2f}x")


if __name__ == "__main__":
    main()
