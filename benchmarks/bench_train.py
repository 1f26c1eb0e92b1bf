"""End-to-end `genos train` throughput next to a bare training loop doing the same work.

    python benchmarks/bench_train.py [--steps 16] [--micro-batch 8] [--rounds 2]

In one run, on the small preset (fp32, real E. coli data, sequences of 512 tokens):

1. bare loop: the model, torch's AdamW, the cosine schedule and gradient clipping in a plain
   Python loop: no DeepSpeed, no logging, no progress view. It replays exactly what
   `genos train` does at seed 0: the same initial weights, the same samples in the same
   order, the same learning rates. The per-step losses of the two are printed side by
   side: matching losses show the two did the same work.
2. `genos train`, 1 process: everything (DeepSpeed engine, data loading, metrics, the
   JSONL log, the live view), timed step by step from the wall clock in its log.
3. `genos train`, 2 processes (DeepSpeed launcher, gloo, one thread each), for scaling.

The step time of a MoE depends on its routing (how tokens spread over the experts), which
changes as it trains: runs that train differently are not comparable step for step, which
is why the bare loop replays genos's run. Each is timed over the same steady-state steps
(after 2 warm-up steps) in fresh processes; bare loop and `genos train` alternate over
`--rounds` rounds and each keeps its fastest round, so a busy moment on the machine
flatters neither. The engine's overhead is 1 - (bare loop seconds) / (genos seconds) over
those steps; the target is under 10%.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ECOLI = REPO.parent / "shared" / "data" / "genomes" / "ecoli_k12_mg1655.fasta.gz"
WARMUP = 2


def prepare(tmp: Path) -> Path:
    prefix = tmp / "data" / "ecoli"
    subprocess.run(
        [sys.executable, "-m", "genos_cli", "preprocess", str(ECOLI), "-o", str(prefix),
         "--workers", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return prefix


def bare_loop(prefix: Path, micro: int, steps: int, compile: bool) -> dict[str, list[float]]:
    """Per-step seconds and losses of the bare loop replaying `genos train`'s 1-process run."""
    import torch

    from genos_cli.config import load_config
    from genos_cli.data.packed import PackedTokenDataset
    from genos_cli.model import build_model
    from genos_cli.train.batches import ShardedBatches
    from genos_cli.train.plan import TrainPlan
    from genos_cli.train.runtime import make_optimizer, param_groups
    from genos_cli.train.schedule import cosine_lr
    from genos_cli.train.trainer import seed_everything

    cfg = load_config("small")
    t = cfg.training
    t.micro_batch_size = t.global_batch_size = micro
    plan = TrainPlan.model_construct(config=cfg, total_steps=steps)
    seed_everything(t.seed)  # as the trainer does, before it builds the model
    data = PackedTokenDataset([f"{prefix}_train_text_document"], cfg.model.max_seq_length, t.seed)
    model = build_model(cfg.model, compile=compile)
    opt = make_optimizer(param_groups(model, t.weight_decay), t, torch.device("cpu"))
    batches = ShardedBatches(data, micro)
    seconds, losses = [], []
    for step in range(steps):
        t0 = time.perf_counter()
        lr = cosine_lr(step, lr=t.lr, min_lr=t.final_lr, warmup_steps=plan.warmup_steps,
                       total_steps=steps)  # fmt: skip
        for group in opt.param_groups:
            group["lr"] = lr
        (batch,) = batches.batches(step)
        out = model(batch.input_ids, labels=batch.labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        seconds.append(time.perf_counter() - t0)
    return {"seconds": seconds, "losses": losses}


_BARE_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from bench_train import bare_loop
args = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
print(json.dumps(bare_loop(*args)))
"""


def bare_in_subprocess(prefix: Path, micro: int, steps: int, compile: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _BARE_CHILD, str(Path(__file__).parent), str(prefix), str(micro),
         str(steps), "1" if compile else "0"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def genos_train(prefix: Path, micro: int, steps: int, procs: int, compile: bool, tmp: Path) -> dict:
    """Per-step wall seconds (from the log's clock) and losses of a `genos train` run."""
    out = Path(tempfile.mkdtemp(prefix=f"run{procs}-", dir=tmp))
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
    lines = (out / "training_log.jsonl").read_text().splitlines()
    train = [r for r in map(json.loads, lines) if r["type"] == "train"]
    elapsed = [r["elapsed_s"] for r in train]
    seconds = [elapsed[0]] + [b - a for a, b in itertools.pairwise(elapsed)]
    return {
        "seconds": seconds,
        "losses": [r["loss"] for r in train],
        "mfu": sorted(r["mfu"] for r in train[WARMUP:])[len(train[WARMUP:]) // 2],
        "peak_mb": max(r["mem_peak_mb"] for r in train),
    }


def steady(run: dict) -> float:
    """Seconds of the steps after warm-up."""
    return sum(run["seconds"][WARMUP:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    micro, steps = args.micro_batch, args.steps
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        prefix = prepare(tmp)
        bares, ones = [], []
        for _ in range(args.rounds):
            bares.append(bare_in_subprocess(prefix, micro, steps, args.compile))
            ones.append(genos_train(prefix, micro, steps, 1, args.compile, tmp))
        two = genos_train(prefix, micro, steps, 2, args.compile, tmp)
    bare, one = min(bares, key=steady), min(ones, key=steady)
    timed = (steps - WARMUP) * micro * 512

    print(
        f"small preset, micro-batch {micro} x 512 tokens, fp32, compile={args.compile}, "
        f"{os.cpu_count()} CPUs, {steps} steps ({WARMUP} warm-up), best of {args.rounds} rounds"
    )
    print(f"\n{'step':>4}  {'bare loss':>9}  {'genos loss':>10}  {'bare ms':>8}  {'genos ms':>8}")
    for i in range(steps):
        print(
            f"{i + 1:>4}  {bare['losses'][i]:>9.4f}  {one['losses'][i]:>10.4f}  "
            f"{1000 * bare['seconds'][i]:>8.0f}  {1000 * one['seconds'][i]:>8.0f}"
        )
    drift = max(abs(a - b) for a, b in zip(bare["losses"], one["losses"], strict=True))
    print(f"largest loss difference: {drift:.2e} (same work when small)\n")

    print(f"{'':<30}{'tokens/s':>10}{'vs bare':>9}{'MFU':>8}{'peak MB':>9}")
    print(f"{'bare loop (no engine)':<30}{timed / steady(bare):>10,.0f}{1.0:>9.2f}")
    runs = (("genos train, 1 process", one, 1), ("genos train, 2 processes", two, 2))
    for label, run, procs in runs:
        rate = procs * timed / steady(run)
        print(
            f"{label:<30}{rate:>10,.0f}{rate * steady(bare) / timed:>9.2f}"
            f"{100 * run['mfu']:>7.1f}%{run['peak_mb']:>9,.0f}"
        )
    print(
        "  (rounds, steady seconds: bare "
        + ", ".join(f"{steady(r):.2f}" for r in bares)
        + "; genos "
        + ", ".join(f"{steady(r):.2f}" for r in ones)
        + ")"
    )
    overhead = 1 - steady(bare) / steady(one)
    verdict = "met " if overhead < 0.10 else "MISS"
    print(f"\n{verdict} engine overhead (1 process) < 10%: measured {100 * overhead:.1f}%")


if __name__ == "__main__":
    main()
