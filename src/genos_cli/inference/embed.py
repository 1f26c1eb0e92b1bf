"""Embeddings: the hidden states of a chosen layer for each sequence, mean-pooled over its
tokens and, on request, per token. `genos embed` writes them; `genos eval probe` fits its
probes on them.

Sequence policy, as in scoring: anything but A/C/G/T (N, IUPAC codes) splits a sequence
into runs, as `genos preprocess` splits training data, and every run is read after the
end-of-document id, as every training document follows one. A run longer than the context
is cut into context-sized pieces (each after its own end-of-document id) whose token states
are pooled together, so the whole sequence counts. The end-of-document positions are never
pooled or returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genos_cli import extras
from genos_cli.data.fasta import ACGT_RUN, normalise_sequence, read_fasta_records
from genos_cli.data.tokenizers import DNATokenizer
from genos_cli.data.tsv import tsv_rows
from genos_cli.errors import GenosError
from genos_cli.model import GenosForCausalLM

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class Embeddings:
    pooled: np.ndarray  # (N, D) float32 mean over each sequence's tokens; NaN rows: no tokens
    tokens: np.ndarray  # (N,) int64 tokens pooled per sequence
    forwarded: int  # tokens run through the model, padding included
    per_token: list[np.ndarray] | None = None  # N arrays (T_i, D) float32, in sequence order
    token_ids: list[np.ndarray] | None = None  # N arrays (T_i,) int32


@torch.inference_mode()
def embed(
    model: GenosForCausalLM,
    tokenizer: DNATokenizer,
    sequences: Sequence[bytes],
    *,
    layer: int | None = None,
    batch_size: int = 32,
    per_token: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Embeddings:
    """Hidden states after `layer` blocks (None: the last, after the final norm) of each of
    `sequences` (uppercase bytes), mean-pooled, and per token with `per_token`."""
    cfg = model.config
    piece_len = cfg.max_seq_length - 1  # room for the leading end-of-document id
    pieces: list[tuple[int, list[int]]] = []  # (sequence, token ids), in sequence order
    for i, seq in enumerate(sequences):
        for run in ACGT_RUN.findall(seq):
            ids = tokenizer.encode(run.decode("ascii"))
            pieces += [(i, ids[s : s + piece_len]) for s in range(0, len(ids), piece_len)]
    order = sorted(range(len(pieces)), key=lambda k: len(pieces[k][1]))  # little padding
    device = model.embed.weight.device
    sums = torch.zeros(len(sequences), cfg.hidden_size, dtype=torch.float64)
    counts = torch.zeros(len(sequences), dtype=torch.int64)
    states_of: dict[int, np.ndarray] = {}  # piece index -> (T, D) states, with per_token
    forwarded = 0
    for b in range(0, len(order), batch_size):
        chosen = order[b : b + batch_size]
        rows = [pieces[k] for k in chosen]
        width = 1 + max(len(ids) for _, ids in rows)
        batch = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.int64)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, (_, toks) in enumerate(rows):
            batch[r, 0] = tokenizer.eod_id
            batch[r, 1 : 1 + len(toks)] = torch.tensor(toks)
            mask[r, 1 : 1 + len(toks)] = True  # pool the sequence's own tokens only
        forwarded += batch.numel()
        # Causal attention: padding on the right never reaches the tokens before it.
        states = model.hidden_states(batch.to(device), layer).float().cpu()  # (B, T, D)
        pooled = (states * mask[..., None]).sum(dim=1).double()  # (B, D)
        owners = torch.tensor([i for i, _ in rows])
        sums.index_add_(0, owners, pooled)
        counts.index_add_(0, owners, mask.sum(dim=1))
        if per_token:
            for r, k in enumerate(chosen):
                states_of[k] = states[r, 1 : 1 + len(pieces[k][1])].numpy().copy()
        if progress is not None:
            progress(min(b + batch_size, len(order)), len(order))
    mean = (sums / counts.clamp(min=1)[:, None]).float().numpy()
    mean[counts.numpy() == 0] = np.nan
    result = Embeddings(mean, counts.numpy(), forwarded)
    if per_token:
        dim = cfg.hidden_size
        per_seq: list[list[int]] = [[] for _ in sequences]
        for k, (i, _) in enumerate(pieces):
            per_seq[i].append(k)
        result.per_token = [
            np.concatenate([states_of[k] for k in ks]) if ks else np.zeros((0, dim), np.float32)
            for ks in per_seq
        ]
        result.token_ids = [
            np.array([t for k in ks for t in pieces[k][1]], np.int32) for ks in per_seq
        ]
    return result


# -- the command: sequences from a FASTA or TSV, .npy or Parquet out -----------------------


@dataclass
class NamedSequences:
    ids: list[str]
    sequences: list[bytes]  # normalised: uppercase ACGT and N
    lengths: list[int] = field(default_factory=list)

    def add(self, name: str, sequence: bytes) -> None:
        self.ids.append(name)
        self.sequences.append(sequence)
        self.lengths.append(len(sequence))


def read_tsv_sequences(path: Path) -> NamedSequences:
    """Sequences of a tab-separated file: with a header line naming a `sequence` column (and
    optionally an `id` or `name` column), or without one, the first column is the sequence
    and ids are `row1`, `row2`, ... (data rows, 1-based). Other columns are ignored."""
    rows = tsv_rows(path)
    if not rows:
        raise GenosError(f"{path} is empty (no sequences)")
    first = [c.lower() for c in rows[0][1]]
    seq_col, id_col = 0, None
    if "sequence" in first:
        seq_col = first.index("sequence")
        id_col = next((first.index(c) for c in ("id", "name") if c in first), None)
        rows = rows[1:]
    out = NamedSequences([], [])
    for row, (number, fields) in enumerate(rows, start=1):
        if len(fields) <= max(seq_col, id_col or 0):
            raise GenosError(f"{path}, line {number}: expected a sequence in column {seq_col + 1}")
        raw = fields[seq_col].encode("ascii", "replace")
        seq, bad = normalise_sequence(raw)
        if bad >= 0:
            raise GenosError(
                f"{path}, line {number}: unexpected character {chr(raw[bad])!r} in the "
                "sequence; expected nucleotides (A, C, G, T or IUPAC codes)"
            )
        out.add(fields[id_col] if id_col is not None else f"row{row}", seq)
    if not out.sequences:
        raise GenosError(f"{path} holds a header but no sequences")
    return out


def read_fasta_sequences(path: Path) -> NamedSequences:
    out = NamedSequences([], [])
    for record in read_fasta_records(path):
        out.add(record.id, record.sequence)
    return out


@dataclass
class EmbedOptions:
    checkpoint: Path
    fasta: Path | None = None
    tsv: Path | None = None
    layer: int | None = None
    per_token: bool = False
    batch_size: int = 32
    device: str | None = None


@dataclass
class EmbedSummary:
    checkpoint: str  # its step directory and step (`LoadedCheckpoint.describe`)
    sequences: int
    layer: int
    dim: int
    tokens: int
    without_bases: int  # sequences with no A/C/G/T (NaN embeddings)
    seconds: float
    files: list[Path]


def output_files(out: Path, per_token: bool) -> dict[str, Path]:
    """The files `genos embed -o OUT` writes: OUT.parquet alone, or OUT.npy and beside it
    OUT.ids.txt (+ per-token .tokens.npy, .offsets.npy, .token_ids.npy)."""
    if out.suffix == ".parquet":
        extras.check("parquet")  # before any work
        return {"parquet": out}
    if out.suffix != ".npy":
        raise GenosError(f"-o {out}: name a .npy file (NumPy, with an ids file) or a .parquet file")
    stem = out.with_suffix("")
    files = {"pooled": out, "ids": Path(f"{stem}.ids.txt")}
    if per_token:
        for key in ("tokens", "offsets", "token_ids"):
            files[key] = Path(f"{stem}.{key}.npy")
    return files


def embed_sequences(
    opts: EmbedOptions, staged: dict[str, Path], progress: Progress | None = None
) -> EmbedSummary:
    """Read, embed and write: `staged` maps each of `output_files` to where to write it."""
    from genos_cli.inference.loading import load_for_inference

    if (opts.fasta is None) == (opts.tsv is None):
        raise GenosError("give the sequences to embed: --fasta FILE or --tsv FILE")
    if opts.batch_size < 1:
        raise GenosError(f"--batch-size must be at least 1, got {opts.batch_size}")
    named = read_fasta_sequences(opts.fasta) if opts.fasta else read_tsv_sequences(opts.tsv)  # type: ignore[arg-type]
    ckpt = load_for_inference(opts.checkpoint, opts.device)
    layers = ckpt.config.model.num_layers
    layer = layers if opts.layer is None else opts.layer
    if not 0 <= layer <= layers:
        raise GenosError(f"--layer must be in [0, {layers}], got {layer}")
    t0 = time.perf_counter()
    result = embed(
        ckpt.model, ckpt.tokenizer, named.sequences, layer=layer, batch_size=opts.batch_size,
        per_token=opts.per_token,
        progress=(lambda d, t: progress("embedding", d, t)) if progress else None,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if "parquet" in staged:
        _write_parquet(staged["parquet"], named, result)
    else:
        _write_numpy(staged, named, result)
    return EmbedSummary(
        checkpoint=ckpt.describe(), sequences=len(named.ids), layer=layer,
        dim=result.pooled.shape[1], tokens=int(result.tokens.sum()),
        without_bases=int((result.tokens == 0).sum()), seconds=seconds, files=[],
    )  # fmt: skip


def _write_numpy(files: dict[str, Path], named: NamedSequences, result: Embeddings) -> None:
    with files["pooled"].open("wb") as fh:
        np.save(fh, result.pooled)
    files["ids"].write_text("".join(f"{i}\n" for i in named.ids), encoding="utf-8")
    if result.per_token is not None and result.token_ids is not None:
        offsets = np.concatenate([[0], np.cumsum([a.shape[0] for a in result.per_token])])
        for key, array in (("tokens", np.concatenate(result.per_token)),
                           ("offsets", offsets.astype(np.int64)),
                           ("token_ids", np.concatenate(result.token_ids))):  # fmt: skip
            with files[key].open("wb") as fh:
                np.save(fh, array)


def _write_parquet(path: Path, named: NamedSequences, result: Embeddings) -> None:
    (pa,) = extras.require("parquet")
    import pyarrow.parquet as pq

    dim = result.pooled.shape[1]
    vector = pa.list_(pa.float32(), dim)
    columns = {
        "id": pa.array(named.ids, pa.string()),
        "length": pa.array(named.lengths, pa.int64()),
        "tokens": pa.array(result.tokens, pa.int64()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(result.pooled.ravel()), dim),
    }
    if result.per_token is not None and result.token_ids is not None:
        ids = [a.tolist() for a in result.token_ids]
        columns["token_ids"] = pa.array(ids, pa.list_(pa.int32()))
        flat = pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate(result.per_token).ravel(), pa.float32()), dim
        )
        offsets = np.concatenate([[0], np.cumsum([a.shape[0] for a in result.per_token])])
        columns["token_embeddings"] = pa.ListArray.from_arrays(
            pa.array(offsets, pa.int32()), flat, type=pa.list_(vector)
        )
    pq.write_table(pa.table(columns), path)
