"""End-to-end `genos train` throughput next to the bare model's training step.

    python benchmarks/bench_train.py [--steps 12] [--micro-batch 8]

In one run, on the small preset (fp32, real E. coli data, sequences of 512 tokens):

1. raw step: the bare model, forward + backward + AdamW step + zero_grad on micro-batches
   of the same shape, no DeepSpeed, no data pipeline, no logging (tokens/s, median of the
   steps after warm-up);
2. `genos train`, 1 process: everything (DeepSpeed engine, data loading, metrics, logging),
   tokens/s over the steady-state steps, from the wall clock between log records;
3. `genos train`, 2 processes (DeepSpeed launcher, gloo, one thread each).

The engine's overhead is 1 - (1-process tokens/s) / (raw tokens/s); the issue's target is
under 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ECOLI = REPO.parent / "shared" / "data" / "genomes" / "ecoli_k12_mg1655.fasta.gz"


def prepare(tmp: Path) -> Path:
    prefix = tmp / "data" / "ecoli"
    subprocess.run(
        [sys.executable, "-m", "genos_cli", "preprocess", str(ECOLI), "-o", str(prefix),
         "--workers", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return prefix


def raw_step(prefix: Path, micro: int, steps: int, compile: bool) -> float:
    """Tokens/s of the bare model's training step (median after 2 warm-up steps)."""
    import numpy as np
    import torch

    from genos_cli.config import load_config
    from genos_cli.model import build_model
    from genos_cli.train.data import PackedTokenDataset, to_micro_batch

    cfg = load_config("small")
    torch.manual_seed(0)
    model = build_model(cfg.model, compile=compile)
    t = cfg.training
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2))
    data = PackedTokenDataset([f"{prefix}_train_text_document"], cfg.model.max_seq_length, 1)
    times = []
    for step in range(steps):
        batch = to_micro_batch(data.samples(np.arange(step * micro, (step + 1) * micro)))
        t0 = time.perf_counter()
        out = model(batch.input_ids, labels=batch.labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times[2:])
    return micro * cfg.model.max_seq_length / per_step


_RAW_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench_train import raw_step
print(raw_step(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"))
"""


def raw_in_subprocess(prefix: Path, micro: int, steps: int, compile: bool) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _RAW_CHILD, str(Path(__file__).parent), str(prefix), str(micro),
         str(steps), "1" if compile else "0"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def end_to_end(prefix: Path, micro: int, steps: int, procs: int, compile: bool, tmp: Path) -> dict:
    out = tmp / f"run{procs}"
    cmd = [
        sys.executable, "-m", "genos_cli", "train", "--size", "small", "--data-path", str(prefix),
        "--max-steps", str(steps), "--micro-batch-size", str(micro),
        "--global-batch-size", str(micro * procs), "--log-interval", "1",
        "--eval-interval", str(10 * steps), "--save-interval", str(10 * steps),
        "--output-dir", str(out), "--num-gpus", str(procs),
        "--compile" if compile else "--no-compile",
    ]  # fmt: skip
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"))
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    recs = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["type"] == "train"]
    steady = train[2:]  # after warm-up (compilation, allocator)
    span = steady[-1]["elapsed_s"] - train[1]["elapsed_s"]
    tokens = steady[-1]["tokens"] - train[1]["tokens"]
    return {
        "tokens_per_s": tokens / span,
        "step_tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
        "mfu": statistics.median(r["mfu"] for r in steady),
        "peak_mb": max(r["mem_peak_mb"] for r in steady),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        prefix = prepare(tmp)
        # Raw steps before and after the end-to-end runs, each in a fresh process like them;
        # the faster counts, so a busy moment on the machine cannot flatter the engine.
        raws = [raw_in_subprocess(prefix, args.micro_batch, args.steps, args.compile)]
        one = end_to_end(prefix, args.micro_batch, args.steps, 1, args.compile, tmp)
        two = end_to_end(prefix, args.micro_batch, args.steps, 2, args.compile, tmp)
        raws.append(raw_in_subprocess(prefix, args.micro_batch, args.steps, args.compile))
        raw = max(raws)
    print(
        f"small preset, micro-batch {args.micro_batch} x 512 tokens, fp32, "
        f"compile={args.compile}, {os.cpu_count()} CPUs, {args.steps} steps (2 warm-up)"
    )
    print(f"{'':<34}{'tokens/s':>10}{'vs raw':>9}{'MFU':>8}{'peak MB':>9}")
    print(f"{'raw model step (no engine)':<34}{raw:>10,.0f}{1.0:>9.2f}{'':>8}{'':>9}")
    print(f"  (raw runs: {', '.join(f'{r:,.0f}' for r in raws)} tokens/s)")
    for label, r in (("genos train, 1 process", one), ("genos train, 2 processes", two)):
        print(
            f"{label:<34}{r['tokens_per_s']:>10,.0f}{r['tokens_per_s'] / raw:>9.2f}"
            f"{100 * r['mfu']:>7.1f}%{r['peak_mb']:>9,.0f}"
        )
    overhead = 1 - one["tokens_per_s"] / raw
    verdict = "met " if 0 <= overhead < 0.10 else ("NOISY" if overhead < 0 else "MISS")
    print(f"\n{verdict} engine overhead (1 process) < 10%: measured {100 * overhead:.1f}%")
    if overhead < 0:
        print("the raw step was slower than the engine: the machine was busy; run again")


if __name__ == "__main__":
    main()
