"""Training-step speed of genos vs Hugging Face `MixtralForCausalLM`, same config, same weights.

    python benchmarks/bench_train_step.py            # small preset, batch 8 x 512, fp32, 2 threads

Each step is forward + backward + AdamW (`genos_cli.train.runtime.make_optimizer`, what
`genos train` steps with, the same for both models) on one batch. The models are stepped
in turn (genos, HF eager experts, HF grouped_mm experts, genos, ...) so load from other
processes hits all of them alike; tokens/s is the batch's tokens over the median step time
after warm-up. HF runs at its fastest settings: SDPA
attention and whichever experts implementation is faster in this run. Both models hold the
same weights (converted with genos_cli.interop), so they route the same tokens to the same
experts.

Reported: tokens/s, genos/HF ratio, model FLOPs per token (active-parameter matmuls + full
attention, x3 for training; genos_cli.model.flops), achieved FLOP/s as a share of this
machine's fp32 matmul peak measured in the same run, forward-only (inference) tokens/s, and
the peak RSS of a fresh process doing the same steps with one model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from genos_cli.config.presets import load_config
from genos_cli.config.schema import ModelConfig
from genos_cli.interop import to_hf_state_dict, to_mixtral_config
from genos_cli.model import build_model
from genos_cli.model.flops import model_flops_per_token
from genos_cli.train.runtime import make_optimizer

TRAINING = load_config("small").training.model_copy(update={"lr": 1e-4})

HF_VARIANTS = ("hf_eager", "hf_grouped_mm")


@dataclass
class Timings:
    train: list[float] = field(default_factory=list)  # seconds per training step
    infer: list[float] = field(default_factory=list)  # seconds per forward pass


def matmul_peak_gflops(repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of large square matmuls: the machine's practical matmul peak."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def _batch(cfg: ModelConfig, batch: int, seq: int) -> torch.Tensor:
    return torch.randint(
        0, cfg.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0)
    )


def make_models(cfg: ModelConfig, names: list[str], compile: bool) -> dict[str, torch.nn.Module]:
    torch.manual_seed(1234)
    genos = build_model(cfg, compile=compile)
    models: dict[str, torch.nn.Module] = {}
    if "genos" in names:
        models["genos"] = genos
    for name in names:
        if name in HF_VARIANTS:
            from transformers import MixtralForCausalLM

            hf_config = to_mixtral_config(cfg, attn_implementation="sdpa")
            hf_config._experts_implementation = name.removeprefix("hf_")
            hf = MixtralForCausalLM(hf_config)
            hf.load_state_dict(to_hf_state_dict(genos.state_dict(), cfg), strict=True)
            models[name] = hf
    return models


def make_steps(
    models: dict[str, torch.nn.Module], ids: torch.Tensor
) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    """(training step, forward-only step) per model."""
    genos_labels = torch.roll(ids, -1, dims=1)  # genos labels are aligned with the logits
    steps = {}
    for name, model in models.items():
        optimizer = make_optimizer(
            [{"params": list(model.parameters())}], TRAINING, torch.device("cpu")
        )
        is_genos = name.startswith("genos")

        def train(model=model, optimizer=optimizer, is_genos=is_genos) -> None:
            model.train()
            if is_genos:
                loss = model(ids, labels=genos_labels).loss
            else:  # HF shifts labels=input_ids itself; aux loss included like genos's
                loss = model(ids, labels=ids, output_router_logits=True).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def infer(model=model) -> None:
            model.eval()
            with torch.no_grad():
                model(ids)

        steps[name] = (train, infer)
    return steps


def run_alternating(
    steps: dict[str, tuple[Callable[[], None], Callable[[], None]]],
    warmup: int,
    repeats: int,
) -> tuple[dict[str, Timings], float]:
    """Step the models in turn; also sample the matmul peak after every round, because
    load from other processes comes and goes and a single measurement can catch it.
    Returns the timings and the best matmul GFLOP/s seen."""
    timings = {name: Timings() for name in steps}
    peak = matmul_peak_gflops()
    for kind in (0, 1):  # training, then inference
        for name, pair in steps.items():
            for _ in range(warmup):
                pair[kind]()
            print(f"  warmed up {name} {'train' if kind == 0 else 'infer'}", flush=True)
        for _ in range(repeats):
            for name, pair in steps.items():
                start = time.perf_counter()
                pair[kind]()
                elapsed = time.perf_counter() - start
                (timings[name].train if kind == 0 else timings[name].infer).append(elapsed)
            peak = max(peak, matmul_peak_gflops(repeats=2))
    return timings, max(peak, matmul_peak_gflops())


def rss_probe(args: argparse.Namespace) -> None:
    """Child process: a few training steps of one model, then print peak RSS in MiB."""
    cfg = load_config(size=args.size).model
    ids = _batch(cfg, args.batch, args.seq)
    models = make_models(cfg, [args.rss_probe], compile=not args.no_compile)
    train, _ = make_steps(models, ids)[args.rss_probe]
    for _ in range(3):
        train()
    print(peak_rss_of_this_process_mib())


def peak_rss_of_this_process_mib() -> float:
    """VmHWM, the resident-set high-water mark of this process's memory since its exec.

    Not getrusage's ru_maxrss: Linux carries that over from the parent across fork/exec,
    so a child started by a big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_rss_mib(name: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--rss-probe", name, "--size", args.size]
    cmd += ["--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads)]
    if args.no_compile:
        cmd.append("--no-compile")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="preset (default small)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured steps per model")
    parser.add_argument("--repeats", type=int, default=10, help="measured steps per model")
    parser.add_argument("--no-compile", action="store_true", help="genos in eager mode")
    parser.add_argument("--no-hf", action="store_true", help="genos only")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS processes")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--rss-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_probe:
        rss_probe(args)
        return

    cfg = load_config(size=args.size).model
    tokens = args.batch * args.seq
    names = ["genos"] if args.no_hf else ["genos", *HF_VARIANTS]
    print(
        f"torch {torch.__version__}, {args.threads} threads, preset {args.size}, "
        f"batch {args.batch} x {args.seq}, fp32, genos {'eager' if args.no_compile else 'compiled'}"
    )
    load_before = os.getloadavg()[0]
    steps = make_steps(
        make_models(cfg, names, compile=not args.no_compile), _batch(cfg, args.batch, args.seq)
    )
    timings, peak = run_alternating(steps, args.warmup, args.repeats)
    load_after = os.getloadavg()[0]

    train_flops = model_flops_per_token(cfg, args.seq, training=True)
    infer_flops = model_flops_per_token(cfg, args.seq, training=False)
    results: dict[str, dict[str, float]] = {}
    for name, t in timings.items():
        train_tps = tokens / statistics.median(t.train)
        infer_tps = tokens / statistics.median(t.infer)
        results[name] = {
            "train_tokens_per_s": train_tps,
            "train_share_of_peak": train_tps * train_flops / (peak * 1e9),
            "infer_tokens_per_s": infer_tps,
            "infer_share_of_peak": infer_tps * infer_flops / (peak * 1e9),
            "train_step_s": [round(s, 4) for s in t.train],  # type: ignore[dict-item]
            "infer_step_s": [round(s, 4) for s in t.infer],  # type: ignore[dict-item]
        }
    if not args.no_rss:
        for name in results:
            results[name]["peak_rss_mib"] = peak_rss_mib(name, args)

    # The cores may be shared: other processes make every step slower and, with 2 threads,
    # make each parallel op wait for a descheduled thread. Load average says how quiet it was.
    print(f"\nload average (1 min) before / after: {load_before:.2f} / {load_after:.2f}")
    print(
        f"fp32 matmul peak (best 1024^3 / 2048^3 matmul, sampled every round): {peak:.0f} GFLOP/s"
    )
    print(
        f"model FLOPs per token: {train_flops / 1e6:.2f} M training, "
        f"{infer_flops / 1e6:.2f} M forward"
    )
    header = (
        f"{'model':15s} {'train tok/s':>12s} {'% peak':>7s} {'infer tok/s':>12s} {'% peak':>7s}"
    )
    header += f" {'RSS MiB':>8s}"
    print(header)
    for name, r in results.items():
        rss = f"{r['peak_rss_mib']:8.0f}" if "peak_rss_mib" in r else f"{'-':>8s}"
        print(
            f"{name:15s} {r['train_tokens_per_s']:12.0f} {100 * r['train_share_of_peak']:6.1f}% "
            f"{r['infer_tokens_per_s']:12.0f} {100 * r['infer_share_of_peak']:6.1f}% {rss}"
        )
    summary: dict[str, object] = {
        "peak_gflops": peak,
        "load_average": [load_before, load_after],
        "train_flops_per_token": train_flops,
        "infer_flops_per_token": infer_flops,
        "results": results,
        "args": vars(args),
        "torch": torch.__version__,
    }
    if not args.no_hf:
        hf_best = max(HF_VARIANTS, key=lambda n: results[n]["train_tokens_per_s"])
        hf_infer = max(HF_VARIANTS, key=lambda n: results[n]["infer_tokens_per_s"])
        train_ratio = (
            results["genos"]["train_tokens_per_s"] / results[hf_best]["train_tokens_per_s"]
        )
        infer_ratio = (
            results["genos"]["infer_tokens_per_s"] / results[hf_infer]["infer_tokens_per_s"]
        )
        # Each round steps every model once, back to back: the median of the per-round
        # ratios is less sensitive to load that comes and goes than the ratio of medians.
        train_rounds = statistics.median(
            h / g for h, g in zip(timings[hf_best].train, timings["genos"].train, strict=True)
        )
        infer_rounds = statistics.median(
            h / g for h, g in zip(timings[hf_infer].infer, timings["genos"].infer, strict=True)
        )
        print(
            f"\ngenos / HF ({hf_best}, its faster experts implementation here): "
            f"{train_ratio:.2f}x training (median of per-round ratios {train_rounds:.2f}x)"
        )
        print(
            f"genos / HF ({hf_infer}): {infer_ratio:.2f}x inference "
            f"(median of per-round ratios {infer_rounds:.2f}x)"
        )
        summary.update(
            hf_best_train=hf_best,
            train_ratio=train_ratio,
            train_ratio_per_round=train_rounds,
            hf_best_infer=hf_infer,
            infer_ratio=infer_ratio,
            infer_ratio_per_round=infer_rounds,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2, default=str)


if __name__ == "__main__":
    main()
