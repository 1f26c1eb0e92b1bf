"""Zero-shot scoring: the log-likelihood a model gives whole sequences, and the
log-likelihood ratio of a variant's ALT and REF alleles in the same reference window.

Conditioning is as in training: every scored stretch of DNA is read after the
end-of-document id, and all of its tokens are scored (the first one from that id alone).
Many windows are scored per forward pass; rows are padded on the right only, which a causal
model provably ignores (no real token attends to a later position, and dropless MoE routing
is per token), and scores are summed per row in float64, so a window scores the same
whatever it is batched with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genos_cli import extras
from genos_cli.data.bases import bases_per_token, bits_per_base
from genos_cli.data.fasta import ACGT_RUN, read_fasta_records
from genos_cli.data.score_windows import IGNORE_INDEX, windows
from genos_cli.data.tokenizers import DNATokenizer
from genos_cli.errors import GenosError
from genos_cli.inference.loading import load_for_inference
from genos_cli.model import GenosForCausalLM

Progress = Callable[[str, int, int], None]  # (what, done, total)

# -- rows of tokens -> summed log-likelihoods ------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One forward pass's worth of tokens: inputs tokens[:-1], labels tokens[1:]; labels
    before `first` are context only (an earlier window scored them)."""

    tokens: np.ndarray  # (n,) int64, n >= 2
    first: int = 0


@torch.inference_mode()
def score_rows(
    model: GenosForCausalLM, rows: Sequence[Row], *, pad_id: int, batch_size: int = 64
) -> tuple[np.ndarray, int]:
    """(sum of log P(label) over each row's scored labels (len(rows),) float64 nats, tokens
    run through the model). Rows are sorted by length so batches hold little padding."""
    device = model.embed.weight.device
    out = np.zeros(len(rows), np.float64)
    order = sorted(range(len(rows)), key=lambda i: rows[i].tokens.size)
    forwarded = 0
    for b in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[b : b + batch_size]]
        width = max(r.tokens.size for r in batch) - 1
        inputs = np.full((len(batch), width), pad_id, np.int64)
        labels = np.full((len(batch), width), IGNORE_INDEX, np.int64)  # padding: not scored
        for j, r in enumerate(batch):
            n = r.tokens.size - 1
            inputs[j, :n] = r.tokens[:-1]
            labels[j, r.first : n] = r.tokens[1 + r.first :]
        forwarded += int(inputs.size)
        logits = model(torch.from_numpy(inputs).to(device)).logits  # (B, T, V)
        nll = F.cross_entropy(
            logits.flatten(0, 1).float(), torch.from_numpy(labels).to(device).flatten(),
            ignore_index=IGNORE_INDEX, reduction="none",
        )  # fmt: skip
        out[order[b : b + batch_size]] = -nll.view(len(batch), width).double().sum(1).cpu().numpy()
    return out, forwarded


# -- whole sequences ------------------------------------------------------------------------


@dataclass
class SequenceScore:
    id: str
    length: int  # characters in the record
    scored_bases: int  # the bases its scored tokens spell (its A/C/G/T bases)
    tokens: int
    log_likelihood: float  # nats, summed over the scored tokens

    @property
    def bits_per_base(self) -> float:
        if not self.scored_bases:
            return float("nan")
        return bits_per_base(-self.log_likelihood, self.scored_bases)


def sequence_rows(
    tokenizer: DNATokenizer, sequence: bytes, context: int, stride: int, spelled: np.ndarray
) -> tuple[list[Row], int, int]:
    """The rows that score one sequence, the bases its tokens spell and its token count
    (`spelled`: bases per token id, `genos_cli.data.bases.bases_per_token`).

    Anything but A/C/G/T (N, IUPAC codes) splits the sequence into runs, as `genos
    preprocess` splits training data: each run is a document read after the end-of-document
    id, windowed over the context exactly as `genos eval` windows
    (`genos_cli.data.score_windows`).
    """
    rows: list[Row] = []
    bases = tokens = 0
    for match in ACGT_RUN.finditer(sequence):
        run = match.group().decode("ascii")
        ids = np.array([tokenizer.eod_id, *tokenizer.encode(run)], np.int64)
        bases += int(spelled[ids[1:]].sum())
        tokens += ids.size - 1
        for start, length, first in windows(ids.size, context, stride):
            rows.append(Row(ids[start : start + length + 1], first))
    return rows, bases, tokens


@dataclass
class ScoreOptions:
    checkpoint: Path
    batch_size: int = 64
    stride: int | None = None  # tokens between window starts of long sequences
    device: str | None = None

    def check(self) -> None:
        if self.batch_size < 1:
            raise GenosError(f"--batch-size must be at least 1, got {self.batch_size}")


def score_sequences(
    opts: ScoreOptions, fasta: Path, progress: Progress | None = None
) -> Iterator[SequenceScore]:
    """Score every record of `fasta`, in order, streaming: records are read and scored a
    group at a time (whole records, about `4 x batch_size` windows per group)."""
    opts.check()
    ckpt = load_for_inference(opts.checkpoint, opts.device)
    context = ckpt.config.model.max_seq_length
    stride = opts.stride or context
    if not 1 <= stride <= context:
        raise GenosError(f"--stride must be in [1, {context}] (the context), got {stride}")
    spelled = bases_per_token(ckpt.tokenizer)
    records = read_fasta_records(fasta)
    pending: list[tuple[SequenceScore, list[Row]]] = []
    done = 0

    def flush() -> Iterator[SequenceScore]:
        rows = [row for _, rs in pending for row in rs]
        sums, _ = score_rows(ckpt.model, rows, pad_id=ckpt.tokenizer.pad_id,
                             batch_size=opts.batch_size)  # fmt: skip
        at = 0
        for result, rs in pending:
            result.log_likelihood = float(sums[at : at + len(rs)].sum())
            at += len(rs)
            yield result
        pending.clear()

    for record in records:
        rows, bases, tokens = sequence_rows(
            ckpt.tokenizer, record.sequence, context, stride, spelled
        )
        score = SequenceScore(record.id, len(record.sequence), bases, tokens, 0.0)
        pending.append((score, rows))
        if sum(len(rs) for _, rs in pending) >= 4 * opts.batch_size:
            for result in flush():
                done += 1
                if progress:
                    progress("scoring sequences", done, done)
                yield result
    for result in flush():
        yield result


# -- variants -------------------------------------------------------------------------------

COMPLEMENT = str.maketrans("ACGT", "TGCA")


def reverse_complement(seq: str) -> str:
    return seq.translate(COMPLEMENT)[::-1]


def flank_lengths(window: int, ref: str, alt: str) -> tuple[int, int]:
    """Bases of reference to the left and right of a variant's REF span.

    The longer allele plus the two flanks make `window` bases, split as evenly as possible
    (the left flank gets the odd base less). Both alleles get the same flanks, so for an
    indel the REF and ALT windows differ only by the indel and every flanking base is scored
    in both: score = ln P(left + ALT + right) - ln P(left + REF + right).
    """
    span = max(len(ref), len(alt))
    left = (window - span) // 2
    return left, window - span - left


@dataclass
class VariantOptions(ScoreOptions):
    window: int | None = None  # bp; None: the model's context in tokens - 1
    both_strands: bool = False
    on_mismatch: str = "error"  # or "skip"
    tsv: bool = False
    output_name: str | None = None  # the final output's name (its suffix picks VCF/BCF)

    def check(self) -> None:
        super().check()
        if self.on_mismatch not in ("error", "skip"):
            raise GenosError(f"--on-mismatch must be error or skip, got {self.on_mismatch!r}")


@dataclass
class VariantSummary:
    checkpoint: str  # its step directory and step (`LoadedCheckpoint.describe`)
    skipped: dict[str, int]  # records or alleles not scored, by reason
    records: int
    scored_records: int
    scored_alleles: int
    window: int
    both_strands: bool
    seconds: float  # reading and scoring, after loading the checkpoint
    tokens: int


@dataclass
class _Pending:
    """Rows waiting for a forward pass, and which variant allele each belongs to."""

    rows: list[Row] = field(default_factory=list)
    owners: list[tuple[int, int]] = field(default_factory=list)  # (record, alt) per 2 rows


_SKIP_REASONS = {
    "contig": "records on contigs not in the reference",
    "end": "records past the end of their contig",
    "ref": "records whose REF does not match the reference",
}


def _reference_problem(
    variant: Any, lengths: dict[str, int], reference: Any
) -> tuple[str, str] | None:
    """(kind, sentence) saying why a record does not fit the reference, or None."""
    if variant.chrom not in lengths:
        known = ", ".join(list(lengths)[:3]) + (", ..." if len(lengths) > 3 else "")
        return "contig", f"contig {variant.chrom!r} is not in the reference (it has {known})"
    end = variant.start + len(variant.ref)
    if end > lengths[variant.chrom]:
        return "end", (
            f"position {variant.start + 1} is past the end of {variant.chrom} "
            f"({lengths[variant.chrom]:,} bp)"
        )
    actual = reference.fetch(variant.chrom, variant.start, end).upper()
    if actual != variant.ref.upper():
        return "ref", f"REF {variant.ref} does not match the reference, which has {actual}"
    return None


def score_variants(
    opts: VariantOptions, vcf: Path, reference_path: Path, out: Path,
    progress: Progress | None = None,
) -> VariantSummary:  # fmt: skip
    """Score every ALT allele of `vcf` against `reference_path`, then write `out`: the VCF
    with INFO/GENOS_LLR (Number=A) added, or a TSV. Records are all read and scored before
    anything is written, so bad input is reported before there is output."""
    from genos_cli.inference.variants import (
        ACGT,
        open_reference,
        open_vcf,
        read_variants,
        write_mode,
    )

    opts.check()
    extras.check("vcf")  # before any work
    ckpt = load_for_inference(opts.checkpoint, opts.device)
    context = ckpt.config.model.max_seq_length
    window = opts.window if opts.window is not None else context - 1
    if not 1 <= window <= context - 1:
        raise GenosError(
            f"--window must be in [1, {context - 1}] bp: the model reads {context} tokens, "
            f"one of them the end-of-document id; got {window}"
        )
    reference = open_reference(reference_path)
    lengths = dict(zip(reference.references, reference.lengths, strict=True))
    handle = open_vcf(vcf)
    tokenizer = ckpt.tokenizer
    scores: dict[int, list[tuple[float, float] | None]] = {}  # record -> per ALT (fwd, rev)
    variants: dict[int, Any] = {}
    skipped: dict[str, int] = {}
    pending = _Pending()
    records = tokens = 0
    t0 = time.perf_counter()

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    def encode(seq: str) -> Row:
        return Row(np.array([tokenizer.eod_id, *tokenizer.encode(seq)], np.int64))

    def flush() -> None:
        nonlocal tokens
        if not pending.rows:
            return
        sums, forwarded = score_rows(ckpt.model, pending.rows, pad_id=tokenizer.pad_id,
                                     batch_size=opts.batch_size)  # fmt: skip
        tokens += forwarded
        per = 4 if opts.both_strands else 2
        for k, (record, alt) in enumerate(pending.owners):
            s = sums[k * per : (k + 1) * per]
            fwd = s[1] - s[0]
            rev = s[3] - s[2] if opts.both_strands else float("nan")
            scores[record][alt] = (float(fwd), float(rev))
        pending.rows.clear()
        pending.owners.clear()
        if progress:
            progress("scoring variants", len(scores), len(scores))

    symbolic = False
    for variant, _ in read_variants(vcf, handle):
        records += 1
        symbolic |= any(alt.startswith("<") for alt in variant.alts)
        problem = _reference_problem(variant, lengths, reference)
        if problem is not None:
            if opts.on_mismatch == "error":
                raise GenosError(
                    f"{vcf}, {variant.where}: {problem[1]}; pass --on-mismatch skip to skip "
                    "records that do not fit the reference"
                )
            skip(_SKIP_REASONS[problem[0]])
            continue
        if not variant.alts:
            skip("records without an ALT allele")
            continue
        scores[variant.index] = [None] * len(variant.alts)
        variants[variant.index] = variant
        ref = variant.ref.upper()
        for a, alt in enumerate(variant.alts):
            alt = alt.upper()
            if not alt or not ACGT.issuperset(alt) or max(len(ref), len(alt)) > window:
                skip("symbolic, non-ACGT or longer-than-window ALT alleles")
                continue
            left_n, right_n = flank_lengths(window, ref, alt)
            start, end = variant.start, variant.start + len(ref)
            left = reference.fetch(variant.chrom, max(start - left_n, 0), start).upper()
            right = reference.fetch(variant.chrom, end, end + right_n).upper()
            ref_seq, alt_seq = left + ref + right, left + alt + right
            if not ACGT.issuperset(ref_seq):
                skip("ALT alleles with N or IUPAC codes in their reference window")
                continue
            pending.rows += [encode(ref_seq), encode(alt_seq)]
            if opts.both_strands:
                pending.rows += [encode(reverse_complement(ref_seq)),
                                 encode(reverse_complement(alt_seq))]  # fmt: skip
            pending.owners.append((variant.index, a))
        if len(pending.rows) >= 4 * opts.batch_size:
            flush()
    flush()
    seconds = time.perf_counter() - t0
    scored_alleles = sum(1 for v in scores.values() for x in v if x is not None)
    description = (
        f"genos zero-shot variant score: ln P(ALT window) - ln P(REF window), natural log, "
        f"{window} bp reference windows centred on the variant"
        + (", mean of both strands" if opts.both_strands else ", forward strand")
        + f"; model {ckpt.path}"
    )
    if opts.tsv:
        _write_tsv(out, variants, scores, opts.both_strands)
    else:
        mode = write_mode(Path(opts.output_name or "out.vcf"))
        _write_vcf(vcf, str(handle.header), symbolic, out, mode, scores, description,
                   opts.both_strands)  # fmt: skip
    handle.close()
    return VariantSummary(
        checkpoint=ckpt.describe(), records=records,
        scored_records=sum(1 for v in scores.values() if any(x is not None for x in v)),
        scored_alleles=scored_alleles, window=window, both_strands=opts.both_strands,
        skipped=skipped, seconds=seconds, tokens=tokens,
    )  # fmt: skip


def _llr(pair: tuple[float, float], both: bool) -> float:
    return (pair[0] + pair[1]) / 2 if both else pair[0]


def _write_tsv(
    out: Path, variants: dict[int, Any], scores: dict[int, list[Any]], both: bool
) -> None:
    with out.open("w", encoding="utf-8") as fh:
        columns = ["chrom", "pos", "id", "ref", "alt", "llr"]
        fh.write("\t".join(columns + (["llr_forward", "llr_reverse"] if both else [])) + "\n")
        for index, variant in variants.items():
            for alt, pair in zip(variant.alts, scores[index], strict=True):
                if pair is None:
                    continue
                fields = [variant.chrom, str(variant.start + 1), variant.id or ".",
                          variant.ref, alt, f"{_llr(pair, both):.6g}"]  # fmt: skip
                if both:
                    fields += [f"{pair[0]:.6g}", f"{pair[1]:.6g}"]
                fh.write("\t".join(fields) + "\n")


def _write_vcf(
    vcf: Path, first_header: str, symbolic: bool, out: Path, mode: str,
    scores: dict[int, list[Any]], description: str, both: bool,
) -> None:  # fmt: skip
    """The input VCF again with INFO/GENOS_LLR on every scored record.

    The reader that writes is given, before its first record, every header line the first
    pass ended with: htslib adds definitions it meets undeclared (contigs, INFO and FILTER
    keys) to the header as it reads, and a record can only be written under a header that
    defines all it uses. Symbolic alleles make htslib use INFO/END, added when missing.
    Records keep their own fields; `bcf_translate` between two headers is avoided (htslib
    exits the process when a tag is missing there)."""
    from genos_cli.inference.variants import INFO_ID, open_vcf, read_variants, require_pysam

    pysam = require_pysam()
    handle = open_vcf(vcf)
    header = handle.header
    have = set(str(header).splitlines())
    for line in first_header.splitlines():
        if line.startswith("##") and line not in have:
            header.add_line(line)
    if symbolic and "END" not in header.info:
        header.info.add("END", 1, "Integer", "End position of the variant (VCF reserved key)")
    if INFO_ID in header.info:
        header.info.remove_header(INFO_ID)
    header.info.add(INFO_ID, "A", "Float", description)
    with pysam.VariantFile(str(out), mode, header=header) as writer:
        for variant, rec in read_variants(vcf, handle):
            if INFO_ID in rec.info:
                del rec.info[INFO_ID]
            values = scores.get(variant.index)
            if values is not None and any(v is not None for v in values):
                rec.info[INFO_ID] = tuple(
                    None if v is None else round(_llr(v, both), 6) for v in values
                )
            writer.write(rec)
    handle.close()
