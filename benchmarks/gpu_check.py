"""GPU acceptance check of genos: one command, a pass/fail table, a few minutes on one GPU.

    python benchmarks/gpu_check.py                      # on a machine with an NVIDIA GPU
    python benchmarks/gpu_check.py --out gpu_check      # keep the runs and results.json there
    python benchmarks/gpu_check.py --device cpu --tiny  # the script's own logic, on a CPU

Checks (each a row; correctness rows fail the command, speed rows report against a target):

1. environment: `genos env` (GPU, torch/CUDA, DeepSpeed, flash-attn, what genos would use);
2. bf16 against an fp32 (TF32) reference: the small preset, same seed and data, the first
   20 steps' losses within a tolerance — bf16 rounds activations, not the optimizer (fp32
   masters, fp32 gradient accumulation);
3. bf16 training of small and medium: the loss falls; tokens/s and MFU (steady state, from
   `training_log.jsonl`), targets small >= 25% and medium >= 40% MFU on H100/H200 bf16;
4. NVML readings in the log: GPU utilisation and memory on every train record;
5. flash-attn against PyTorch SDPA: the same attention output within bf16 tolerance (skipped
   without flash-attn);
6. the experts' grouped GEMM (`torch._grouped_mm`) against the per-expert loop, and the
   expert-parallel batched experts against DeepSpeed's loop: equal within bf16 tolerance;
7. with 2+ GPUs: ZeRO-2 + expert parallelism over 2 GPUs against the 1-GPU run: the same
   losses within tolerance.

Data: the E. coli genome genos ships (no network needed). Needs genos and DeepSpeed
installed (on a machine without network: `pip wheel --no-deps . deepspeed -w wheels` here,
`pip install --no-index --find-links wheels genos deepspeed` there).
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

TINY = [  # --tiny: a model small enough for the CPU self-test
    "--set",
    "model.num_layers=2",
    "--set",
    "model.hidden_size=64",
    "--set",
    "model.num_attention_heads=4",
    "--set",
    "model.num_query_groups=2",
    "--set",
    "model.expert_ffn_hidden_size=64",
    "--set",
    "model.max_seq_length=128",
    "--micro-batch-size",
    "2",
    "--global-batch-size",
    "4",
    "--lr",
    "3e-3",
    "--no-compile",
]


@dataclass
class Row:
    check: str
    ok: bool | None  # None: a measurement reported against a target, or skipped
    measured: str
    target: str = ""
    seconds: float = 0.0


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows: list[Row] = []
        # Each `genos train` is its own run: no rendezvous inherited from a caller that trained
        # in-process (RANK, MASTER_PORT, ... would make the child join a stale group).
        dist_vars = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")
        self.env = {k: v for k, v in os.environ.items() if k not in dist_vars}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.setdefault("XDG_CACHE_HOME", str(self.out / "cache"))
        self.device = torch.device(args.device)

    # -- running genos -------------------------------------------------------------------------

    def genos(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "genos_cli", *args]
        result = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])} failed:\n{result.stderr[-2000:]}")
        return result

    def data(self) -> Path:
        prefix = self.out / "data" / "ecoli"
        if not Path(f"{prefix}.json").is_file():
            self.genos("preprocess", "-o", str(prefix), "--overwrite")
        return prefix

    def train(self, name: str, *args: str, processes: int = 1) -> list[dict[str, Any]]:
        run = self.out / "runs" / name
        base = [
            "train",
            "--data-path",
            str(self.data()),
            "--output-dir",
            str(run),
            "--log-interval",
            "1",
            "--eval-interval",
            "100000",
            "--save-interval",
            "100000",
            "--num-gpus",
            str(processes),
        ]
        if self.args.tiny:
            base += ["--size", "small", *TINY]
        if run.exists():
            import shutil

            shutil.rmtree(run)
        self.genos(*base, *args)
        lines = (run / "training_log.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["type"] == "train"]

    def record(self, check: str, fn: Callable[[], Row]) -> None:
        t0 = time.perf_counter()
        try:
            row = fn()
        except Exception as exc:  # a check that crashes is a failed check, with its reason
            row = Row(check, False, f"error: {' '.join(str(exc).split())[:300]}")
        row.check, row.seconds = check, time.perf_counter() - t0
        self.rows.append(row)
        status = {True: "PASS", False: "FAIL", None: "----"}[row.ok]
        print(f"[{status}] {check}: {row.measured} {row.target}".rstrip(), flush=True)

    # -- the checks ----------------------------------------------------------------------------

    def environment(self) -> Row:
        env = json.loads(self.genos("env", "--json").stdout)
        gpus = ", ".join(g["name"] for g in env["gpus"]) or "no GPU"
        use = env["genos_would_use"]
        return Row(
            "",
            True,
            f"{gpus}; torch {env['torch']['version']} (CUDA "
            f"{env['torch']['cuda']}); deepspeed {env['deepspeed'].get('version')}; "
            f"{use['precision']}, attention {use['attention']}, experts {use['experts']}",
        )

    def bf16_vs_reference(self) -> Row:
        steps = "6" if self.args.tiny else "20"
        size = [] if self.args.tiny else ["--size", "small"]
        ref = self.train("reference-fp32", *size, "--precision", "fp32", "--max-steps", steps)
        bf16 = self.train("bf16", *size, "--precision", "bf16", "--max-steps", steps)
        diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(ref, bf16, strict=True)]
        tolerance = 0.05
        worst = max(diffs)
        return Row(
            "",
            worst <= tolerance,
            f"max abs(loss bf16 - fp32) over {steps} steps = {worst:.4f} "
            f"(final {bf16[-1]['loss']:.4f} vs {ref[-1]['loss']:.4f})",
            f"<= {tolerance}",
        )

    def preset(self, size: str, steps: int, target_mfu: float) -> tuple[Row, Row, Row]:
        sizes = [] if self.args.tiny else ["--size", size]
        precision = "bf16" if self.device.type == "cuda" else "fp32"
        log = self.train(
            f"{size}-{precision}", *sizes, "--precision", precision, "--max-steps", str(steps)
        )
        first, last = log[0]["loss"], log[-1]["loss"]
        falls = Row(
            "",
            last < first - 0.1,
            f"loss {first:.3f} -> {last:.3f} in {steps} steps",
            "falls by > 0.1",
        )
        steady = log[len(log) // 4 :] or log  # past compilation and warm-up
        tps = statistics.median(r["tokens_per_s"] for r in steady)
        mfus = [r["mfu"] for r in steady if r.get("mfu") is not None]
        mfu = statistics.median(mfus) if mfus else None
        speed = Row(
            "",
            None,
            f"{tps:,.0f} tokens/s, MFU " + ("-" if mfu is None else f"{100 * mfu:.1f}%"),
            f"target MFU >= {100 * target_mfu:.0f}%"
            + ("" if mfu is None else (" (met)" if mfu >= target_mfu else " (not met)")),
        )
        util = [r.get("gpu_util") for r in log]
        mem = [r.get("mem_peak_mb") for r in log]
        if self.device.type == "cuda":
            present = all(u is not None for u in util) and all(m and m > 0 for m in mem)
            nvml = Row(
                "",
                present,
                f"gpu_util {util[-1]}%, peak memory {mem[-1]:,.0f} MB "
                f"on {sum(u is not None for u in util)}/{len(util)} records",
            )
        else:
            nvml = Row("", None, "skipped: no GPU (CPU runs record process memory only)")
        return falls, speed, nvml

    def flash_vs_sdpa(self) -> Row:
        from genos_cli.model import flash_attention
        from genos_cli.model.attention import causal_attention

        why_not = flash_attention.flash_attn_usable(self.device, torch.bfloat16, compiling=False)
        if why_not is not None:
            return Row("", None, f"skipped: {why_not}")
        torch.manual_seed(0)
        q = torch.randn(2, 256, 8, 64, device=self.device, dtype=torch.bfloat16)
        k = torch.randn(2, 256, 4, 64, device=self.device, dtype=torch.bfloat16)
        v = torch.randn(2, 256, 4, 64, device=self.device, dtype=torch.bfloat16)
        flash = causal_attention(q, k, v)
        sdpa = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            enable_gqa=True,
        ).transpose(1, 2)
        err = (flash.float() - sdpa.float()).abs().max().item()
        return Row("", err <= 2e-2, f"max abs(flash-attn - SDPA) = {err:.2e}", "<= 2e-2 (bf16)")

    def experts_equal(self) -> Row:
        from genos_cli.model import moe

        torch.manual_seed(0)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        counts = torch.tensor([37, 0, 101, 54], device=self.device)
        offsets = counts.cumsum(0).to(torch.int32)
        x = torch.randn(int(counts.sum()), 256, device=self.device, dtype=dtype)
        w = torch.randn(4, 256, 512, device=self.device, dtype=dtype) / 16
        native = moe._native_grouped_mm_ok(x, w)
        fast = moe.grouped_mm(x, w, offsets)
        loop = moe._grouped_mm(x, w, offsets.cpu())
        err = ((fast.float() - loop.float()).abs().max() / loop.float().abs().max()).item()
        parts = [
            f"grouped GEMM {'(torch._grouped_mm)' if native else '(loop: not available)'} "
            f"vs loop: max rel err {err:.1e}"
        ]
        ok = err <= 2e-2
        ep_err = self._batched_experts_error(dtype)
        if ep_err is not None:
            parts.append(f"EP batched vs DeepSpeed loop: {ep_err:.1e}")
            ok = ok and ep_err <= 2e-2
        return Row("", ok, "; ".join(parts), "<= 2e-2")

    def _batched_experts_error(self, dtype: torch.dtype) -> float | None:
        try:
            from genos_cli.model.layers import SwiGLU
            from genos_cli.train.ds import Experts
            from genos_cli.train.expert_parallel import BatchedExperts
        except ImportError:
            return None
        experts = BatchedExperts(SwiGLU(256, 512), 4, "check").to(self.device, dtype)
        for p in experts.parameters():
            torch.nn.init.normal_(p, std=0.05)
        x = torch.randn(2, 4, 33, 256, device=self.device, dtype=dtype)
        batched, looped = experts(x).float(), Experts.forward(experts, x).float()
        return ((batched - looped).abs().max() / looped.abs().max()).item()

    def expert_parallel(self) -> Row:
        gpus = torch.cuda.device_count() if self.device.type == "cuda" else 0
        if gpus < 2 and not (self.args.tiny and self.device.type == "cpu"):
            return Row("", None, f"skipped: {gpus} GPU (needs 2+)")
        steps = "6" if self.args.tiny else "10"
        size = [] if self.args.tiny else ["--size", "small"]
        one = self.train("ep-1gpu", *size, "--max-steps", steps, "--zero-stage", "2")
        two = self.train(
            "ep-2gpu",
            *size,
            "--max-steps",
            steps,
            "--zero-stage",
            "2",
            "--expert-parallel-size",
            "2",
            processes=2,
        )
        worst = max(abs(a["loss"] - b["loss"]) for a, b in zip(one, two, strict=True))
        tolerance = 0.05 if self.device.type == "cuda" else 1e-3
        return Row(
            "",
            worst <= tolerance,
            f"max abs(loss 2 GPUs (ZeRO-2, EP 2) - 1 GPU) over {steps} steps = {worst:.4f}",
            f"<= {tolerance}",
        )

    # -- the table ------------------------------------------------------------------------------

    def run(self) -> int:
        start = time.perf_counter()
        self.record("environment", self.environment)
        self.record(
            "bf16 follows the fp32/TF32 reference (small, 20 steps)", self.bf16_vs_reference
        )
        small_steps, medium_steps = (
            (8, 8) if self.args.tiny else (self.args.small_steps, self.args.medium_steps)
        )
        for size, steps, target in (("small", small_steps, 0.25), ("medium", medium_steps, 0.40)):
            rows = self.preset(size, steps, target)
            for name, row in zip(
                (
                    f"{size}: bf16 training, loss falls",
                    f"{size}: speed",
                    f"{size}: NVML readings in the log",
                ),
                rows,
                strict=True,
            ):
                row.check = name
                self.rows.append(row)
                status = {True: "PASS", False: "FAIL", None: "----"}[row.ok]
                print(f"[{status}] {name}: {row.measured} {row.target}".rstrip(), flush=True)
        self.record("flash-attn vs SDPA", self.flash_vs_sdpa)
        self.record("experts: grouped GEMM vs loop", self.experts_equal)
        self.record("ZeRO-2 + expert parallel vs 1 GPU", self.expert_parallel)
        total = time.perf_counter() - start
        self.table(total)
        (self.out / "results.json").write_text(
            json.dumps({"rows": [asdict(r) for r in self.rows], "seconds": total}, indent=2)
        )
        return 1 if any(r.ok is False for r in self.rows) else 0

    def table(self, total: float) -> None:
        print("\n| check | result | measured | target |\n|---|---|---|---|")
        for r in self.rows:
            status = {True: "pass", False: "**FAIL**", None: "-"}[r.ok]
            print(f"| {r.check} | {status} | {r.measured} | {r.target} |")
        print(
            f"\n{sum(r.ok is True for r in self.rows)} passed, "
            f"{sum(r.ok is False for r in self.rows)} failed, in {total / 60:.1f} min; "
            f"runs and results.json in {self.out}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="directory for the runs and results.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model: the CPU self-test")
    parser.add_argument("--small-steps", type=int, default=200)
    parser.add_argument("--medium-steps", type=int, default=60)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA GPU here; use --device cpu --tiny to check the script itself")
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
