"""`genos eval` speed: 1 Mbp of held-out DNA through the small model on this machine.

    python benchmarks/bench_eval.py [--mbp 1.0]

Trains the small preset for one step on E. coli (speed does not depend on the weights), then
times `genos eval CHECKPOINT --data saureus.fa` as a user runs it: the whole command in a
fresh process (start-up, checkpoint loading, tokenizing the FASTA, the model's forward
passes, fitting and scoring the order-10 Markov baseline on E. coli's training split), on
the first MBP megabases of S. aureus, a genome the model never saw. Next to it, the same
windows through Hugging Face's `MixtralForCausalLM` holding the same weights (forward only,
SDPA attention), as a reference for the model's forward throughput.
The issue's target: at least 1 Mbp in under a minute.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENOMES = REPO.parent / "shared" / "data" / "genomes"


def genos(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genos_cli", *map(str, args)],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip


def held_out_fasta(tmp: Path, mbp: float) -> Path:
    with gzip.open(GENOMES / "saureus_nctc8325.fasta.gz", "rt") as fh:
        seq = "".join(line.strip() for line in fh if not line.startswith(">"))
    seq = seq[: int(mbp * 1e6)]
    path = tmp / "saureus.fa"
    path.write_text(">held-out\n" + "\n".join(seq[i : i + 80] for i in range(0, len(seq), 80)))
    return path


def hf_forward_tokens_per_s(checkpoint: Path, fasta: Path, batch: int) -> float:
    """Tokens/s of MixtralForCausalLM's forward over the same windows (same weights)."""
    import numpy as np
    import torch
    from transformers import MixtralForCausalLM

    from genos_cli import checkpoint as checkpoints
    from genos_cli.interop.mixtral import to_hf_state_dict, to_mixtral_config

    ckpt = checkpoints.load(checkpoint)
    hf = MixtralForCausalLM(to_mixtral_config(ckpt.config.model, attn_implementation="sdpa")).eval()
    hf.load_state_dict(to_hf_state_dict(ckpt.model.state_dict(), ckpt.config.model))
    text = "".join(fasta.read_text().splitlines()[1:])
    ids = np.array(ckpt.tokenizer.encode(text))
    context = ckpt.config.model.max_seq_length
    n = (ids.size // context) * context
    windows = torch.from_numpy(ids[:n].reshape(-1, context))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, windows.shape[0], batch):
            hf(windows[b : b + batch])
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbp", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"))
        data = tmp / "ecoli"
        genos("preprocess", GENOMES / "ecoli_k12_mg1655.fasta.gz", "-o", data, env=env)
        genos("train", "--size", "small", "--data-path", data, "--max-steps", "1",
              "--micro-batch-size", "8", "--global-batch-size", "8", "--no-compile",
              "--output-dir", tmp / "run", env=env)  # fmt: skip
        fasta = held_out_fasta(tmp, args.mbp)
        t0 = time.perf_counter()
        out = genos("eval", tmp / "run", "--data", fasta, "--batch-size", str(args.batch_size),
                    "--json", env=env)  # fmt: skip
        wall = time.perf_counter() - t0
        r = json.loads(out.stdout)
        hf = hf_forward_tokens_per_s(tmp / "run", fasta, args.batch_size)
    markov = r["baselines"][0]
    print(f"genos eval, small preset, {os.cpu_count()} CPUs, fp32, batch {args.batch_size} x "
          f"{r['context']} tokens, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"held-out data: {r['bases']:,} bases of S. aureus, {r['tokens']:,} tokens")
    print(f"whole command (fresh process):  {wall:6.1f} s")
    print(f"  model forward passes:         {r['seconds']:6.1f} s  "
          f"{r['tokens_per_s']:>8,.0f} tokens/s  {r['bases_per_s']:>9,.0f} bases/s")  # fmt: skip
    print(f"  {markov['name']} (fit + score): {markov.get('seconds', float('nan')):6.1f} s")
    print(f"HF MixtralForCausalLM forward:  {'':6}    {hf:>8,.0f} tokens/s "
          f"(genos/HF {r['tokens_per_s'] / hf:.2f}x)")  # fmt: skip
    per_mbp = wall / (r["bases"] / 1e6)
    verdict = "met " if per_mbp < 60 else "MISS"
    print(f"\n{verdict} >= 1 Mbp in under a minute: {per_mbp:.1f} s per Mbp, whole command")


if __name__ == "__main__":
    main()
