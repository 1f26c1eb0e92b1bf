"""Where a checkpoint loses, or wins, against the order-10 Markov model: the bases
`genos eval` scores on the run's validation split, split by document and by how often the
Markov model saw each base's context in training.

    python benchmarks/quality_gap.py RUN                 # a run directory or a checkpoint
    python benchmarks/quality_gap.py RUN --top 5 --json

The totals are `genos eval RUN`'s: the model scores the documents in the same windows
(`genos_cli.data.score_windows`, stride = context), bits per base leaves end-of-document
targets out, and the Markov model (order 10, concentration 128, fitted on the training
split the checkpoint records) scores the same bases. Each predicted token's bits are set
against the Markov bits of the bases it spells, so every row adds up to the total gap:

- by **context count**: the fewest times the Markov model saw the order-10 context of one
  of the token's bases in training. A genome-specific k-mer spectrum, and the copies of
  multi-copy elements (rRNA operons, insertion sequences), show up as contexts seen often;
  a count table memorises them in one pass, a network only after several epochs.
- by **document**: the documents that hold most of the gap.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genos_cli import checkpoint
from genos_cli.data.bases import PieceTable, bases_per_token
from genos_cli.data.documents import TokenDocuments
from genos_cli.data.score_windows import IGNORE_INDEX, window_batches
from genos_cli.errors import GenosError
from genos_cli.eval.data import token_documents
from genos_cli.eval.lm import fit_markov
from genos_cli.eval.markov import DEFAULT_CONCENTRATION, DEFAULT_ORDER, positions_in_documents

# Context-count buckets (label, low, high): a token with a base fewer than 10 bases into
# its document (no full context: -1), never seen, rare, around a random 10-mer's expected
# count in a 4.6 Mbp genome (4.4), and beyond.
BUCKETS = (("start of a document", -1, 0), ("0 times", 0, 1), ("1-3 times", 1, 4),
           ("4-15 times", 4, 16), ("16-63 times", 16, 64),
           (">= 64 times", 64, np.iinfo(np.int64).max))  # fmt: skip


@torch.inference_mode()
def token_nll_bits(model: torch.nn.Module, docs: TokenDocuments, context: int) -> np.ndarray:
    """Bits of predicting each token of `docs` (NaN for the first, which nobody predicts),
    in `genos eval`'s windows."""
    bits = np.full(docs.tokens.size, np.nan)
    at = 0  # windows come in stream order, `context` tokens apart
    for inputs, labels in window_batches(docs.tokens, context, context, 8):
        logits = model(inputs).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels.clamp(min=0), reduction="none"
        )  # (B, L)
        for row in range(inputs.shape[0]):
            scored = (labels[row] != IGNORE_INDEX).numpy()
            where = at + 1 + np.flatnonzero(scored)
            bits[where] = nll[row].numpy()[scored] / math.log(2)
            at += context
    return bits


def analyse(run: Path, top: int = 8) -> dict[str, Any]:
    ckpt = checkpoint.load(run, torch.device("cpu"))
    meta = ckpt.meta.get("data", {})
    if not meta.get("val") or not meta.get("train"):
        raise GenosError(f"{run}: the checkpoint records no train/validation data")
    table = PieceTable.of(ckpt.tokenizer)
    spelled = bases_per_token(ckpt.tokenizer)
    with token_documents([Path(p) for p in meta["train"]], ckpt, split="train") as fit:
        markov = fit_markov([fit], table, DEFAULT_ORDER, DEFAULT_CONCENTRATION)
    with token_documents([Path(p) for p in meta["val"]], ckpt) as docs:
        net = token_nll_bits(ckpt.model.eval(), docs, ckpt.config.model.max_seq_length)
        codes, token_of_base = table.decode(docs.tokens)
        pos = positions_in_documents(docs.doc_of_token[token_of_base])
        base_bits = -np.log2(markov.probabilities(codes, pos))
        n = docs.tokens.size
        markov_bits = np.bincount(token_of_base, weights=base_bits, minlength=n)
        fewest = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(fewest, token_of_base, markov.context_counts(codes, pos))
        doc_of_token = docs.doc_of_token
    bases = spelled[docs.tokens]
    keep = ~np.isnan(net) & (bases > 0)  # scored tokens that spell bases: bits per base's
    total_bases = bases[keep].sum()

    def part(mask: np.ndarray) -> dict[str, float]:
        b = bases[mask].sum()
        return {
            "bases": int(b),
            "share": float(b / total_bases),
            "genos": float(net[mask].sum() / b) if b else float("nan"),
            "markov": float(markov_bits[mask].sum() / b) if b else float("nan"),
            "gap": float((net[mask].sum() - markov_bits[mask].sum()) / total_bases),
        }

    buckets = []
    for label, low, high in BUCKETS:
        buckets.append({"seen": label, **part(keep & (fewest >= low) & (fewest < high))})
    documents = [{"document": int(d), **part(keep & (doc_of_token == d))}
                 for d in np.unique(doc_of_token[keep])]  # fmt: skip
    documents.sort(key=lambda d: d["gap"], reverse=True)
    overall = part(keep)
    return {
        "checkpoint": str(ckpt.path),
        "genos": overall["genos"],
        "markov": overall["markov"],
        "gap": overall["gap"],
        "bases": overall["bases"],
        "by_context_count": buckets,
        "documents": len(documents),
        "top_documents": documents[:top],
        "gap_in_top_documents": sum(d["gap"] for d in documents[:top]),
    }


def render(r: dict[str, Any]) -> str:
    lines = [
        f"{r['checkpoint']}: {r['genos']:.4f} bits/base against order-10 Markov "
        f"{r['markov']:.4f} on {r['bases']:,} bases (gap {r['gap']:+.4f})",
        "",
        "| Markov context seen in training | share of bases | genos | Markov | gap (bits/base) |",
        "|---|---:|---:|---:|---:|",
    ]
    for b in r["by_context_count"]:
        lines.append(f"| {b['seen']} | {b['share']:.3f} | {b['genos']:.4f} "
                     f"| {b['markov']:.4f} | {b['gap']:+.4f} |")  # fmt: skip
    lines += [
        "",
        f"The {len(r['top_documents'])} documents (of {r['documents']}) with the largest gap "
        f"hold {r['gap_in_top_documents']:+.4f} of it:",
        "",
        "| document | bases | genos | Markov | gap (bits/base of the split) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for d in r["top_documents"]:
        lines.append(f"| {d['document']} | {d['bases']:,} | {d['genos']:.4f} "
                     f"| {d['markov']:.4f} | {d['gap']:+.4f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a run directory or a checkpoint")
    parser.add_argument("--top", type=int, default=8, help="documents to list")
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    args = parser.parse_args(argv)
    try:
        report = analyse(args.run, args.top)
    except GenosError as exc:  # a missing or unreadable run: one sentence, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
