"""`genos generate` speed: tokens/s of genos's cached decoding against Hugging Face
`generate()` on the `genos export hf` of the same checkpoint.

    python benchmarks/bench_generate.py [--new-tokens 256] [--rounds 3] [--threads 2]

The small preset (random weights: speed does not depend on them) is written as a genos
checkpoint and exported with `genos export hf`; both models then continue the same real
E. coli prompt (the first 300 bp after position 1,000,000, read after the end-of-document
id), greedily, with the same special ids masked (`suppress_tokens` for Hugging Face), at
batch 1 (one sample) and batch 16 (16 samples of the prompt). genos runs its public
`generate()` (prompt in, bases out); Hugging Face is forced to produce exactly as many new
tokens as genos did (`min_new_tokens` = `max_new_tokens`), and its tokens are checked to
equal genos's, so both do the same work. Each round times genos and Hugging Face back to
back at both batch sizes; the rounds alternate which goes first, and the table gives the
median and range over rounds of tokens/s (new tokens x batch / seconds) and their ratio.
The issue's target: genos at least 1.5x Hugging Face on this CPU.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
GENOMES = REPO.parent / "shared" / "data" / "genomes"


def ecoli_prompt(start: int = 1_000_000, length: int = 300) -> str:
    with gzip.open(GENOMES / "ecoli_k12_mg1655.fasta.gz", "rt") as fh:
        seq = "".join(line.strip() for line in fh if not line.startswith(">"))
    return seq[start : start + length].upper()


def make_small_checkpoint(directory: Path) -> Path:
    from genos_cli.checkpoint import write_consolidated
    from genos_cli.config import load_config
    from genos_cli.data.tokenizers import load_tokenizer
    from genos_cli.model import build_model

    cfg = load_config("small")
    torch.manual_seed(0)
    model = build_model(cfg.model, compile=False)
    tokenizer = load_tokenizer(cfg.tokenizer.kind, cfg.tokenizer.model_path)
    write_consolidated(directory, model.state_dict(), cfg, tokenizer, {"step": 0})
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256, help="approximate, in tokens")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from genos_cli.checkpoint import load
    from genos_cli.inference.generate import BaseTokens, Prompt, generate
    from genos_cli.inference.sampling import Sampling
    from genos_cli.interop.hf_export import export_hf, require_transformers

    require_transformers()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ckpt_dir = make_small_checkpoint(tmp / "ckpt")
        export_hf(ckpt_dir, tmp / "hf")
        ckpt = load(ckpt_dir)
        hf = AutoModelForCausalLM.from_pretrained(tmp / "hf", dtype=torch.float32).eval()
    model, tokenizer = ckpt.model, ckpt.tokenizer
    prompt = Prompt("ecoli", ecoli_prompt())
    ids = [tokenizer.eod_id, *tokenizer.encode(prompt.bases)]
    tokens = BaseTokens.of(tokenizer, model.config.vocab_size, torch.device("cpu"))
    suppress = torch.nonzero(~tokens.allowed).flatten().tolist()
    # Bases for about --new-tokens tokens at this tokenizer's bp/token.
    num_bases = int(args.new_tokens * len(prompt.bases) / (len(ids) - 1))
    print(
        f"small preset ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), "
        f"prompt {len(prompt.bases)} bp = {len(ids)} tokens with EOD, {num_bases} new bases, "
        f"{torch.get_num_threads()} threads, greedy"
    )

    def run_genos(batch: int) -> tuple[float, list[list[int]]]:
        t0 = time.perf_counter()
        out = list(generate(model, tokenizer, [prompt], num_bases=num_bases,
                            num_samples=batch, sampling=Sampling(temperature=0),
                            batch_size=batch))  # fmt: skip
        return time.perf_counter() - t0, [s.token_ids for s in out]

    def run_hf(batch: int, new: int) -> tuple[float, list[list[int]]]:
        inputs = torch.tensor([ids] * batch)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(
                inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                max_new_tokens=new, min_new_tokens=new, suppress_tokens=suppress,
                pad_token_id=tokenizer.pad_id,
            )  # fmt: skip
        return time.perf_counter() - t0, out[:, len(ids) :].tolist()

    results: dict[int, dict[str, list[float]]] = {b: {"genos": [], "hf": []} for b in args.batches}
    new_tokens: dict[int, int] = {}
    run_genos(1), run_hf(1, 8)  # warm-up: first-call allocations and lazy imports
    for r in range(args.rounds):
        for batch in args.batches:
            order = ("genos", "hf") if r % 2 == 0 else ("hf", "genos")
            for who in order:
                if who == "genos":
                    seconds, rows = run_genos(batch)
                    new_tokens[batch] = max(len(row) for row in rows)
                    ours = rows
                else:
                    seconds, theirs = run_hf(batch, new_tokens.setdefault(batch, 0) or 1)
                results[batch][who].append(new_tokens[batch] * batch / seconds)
            # Same work: Hugging Face produced genos's tokens exactly.
            assert all(t[: len(o)] == o for o, t in zip(ours, theirs, strict=True)), "differ"

    print(f"\n{'batch':>5} {'new tokens':>10} {'genos tok/s':>20} {'HF tok/s':>20} "
          f"{'genos / HF':>18}")  # fmt: skip
    for batch in args.batches:
        g, h = results[batch]["genos"], results[batch]["hf"]
        ratios = [a / b for a, b in zip(g, h, strict=True)]
        print(
            f"{batch:>5} {new_tokens[batch]:>10} "
            f"{statistics.median(g):>8,.0f} ({min(g):,.0f}-{max(g):,.0f}) "
            f"{statistics.median(h):>8,.0f} ({min(h):,.0f}-{max(h):,.0f}) "
            f"{statistics.median(ratios):>7.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
