"""Training a SentencePiece BPE tokenizer on DNA, and measuring how well a tokenizer compresses.

Sentences are uppercase ACGT fragments of at most `sentence_bp` bases cut from the input
(`read_acgt_runs` splits at N and IUPAC codes, so no sentence spans a gap). When the input holds
more than `max_train_bp` bases, an evenly spread subset is used: every fragment adds
`max_train_bp / total_bp` of its length to a running credit and is taken whenever the credit
covers its whole length (which is then spent). The sample so covers every file, and every
region of each file, in proportion to its size, and is the same on every run (no randomness).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genos_cli.atomic import publish, write_temp
from genos_cli.data.tokenizers.base import DNATokenizer
from genos_cli.data.vocab import MAX_VOCAB_SIZE
from genos_cli.errors import GenosError

if TYPE_CHECKING:
    import sentencepiece as spm

# The ids genos reserves, in order: SentencePiece's four meta pieces, then control symbols.
# They match the first seven ids of the nucleotide tokenizer.
META_PIECES = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}
CONTROL_SYMBOLS = ("<mask>", "<sep>", "<cls>")
BASES = "ACGT"
MIN_VOCAB_SIZE = len(META_PIECES) + len(CONTROL_SYMBOLS) + len(BASES)  # 11
EVAL_SAMPLE_BP = 2_000_000


@dataclass(frozen=True)
class TrainResult:
    """What `train_sentencepiece` produced."""

    model_path: Path
    vocab_path: Path
    vocab_size: int
    sentences: int  # training sentences used
    bp_used: int  # bases in those sentences
    bp_available: int  # ACGT bases in the input
    seconds: float  # wall time of SentencePiece training
    bp_per_token: float  # mean bases per token over a spread sample of the training sentences


def validate_train_settings(
    *, vocab_size: int, max_piece_length: int, sentence_bp: int, max_train_bp: int
) -> None:
    """Raise GenosError for settings SentencePiece would reject or that make no sense for DNA."""
    specials = [*META_PIECES.values(), *CONTROL_SYMBOLS]
    if vocab_size < MIN_VOCAB_SIZE:
        raise GenosError(
            f"--vocab-size {vocab_size} is too small: the vocabulary needs at least "
            f"{MIN_VOCAB_SIZE} entries ({len(specials)} special tokens {', '.join(specials)}, "
            "and the bases A, C, G, T)"
        )
    if vocab_size > MAX_VOCAB_SIZE:
        raise GenosError(
            f"--vocab-size {vocab_size} is too large: token ids are stored as uint16, so at most "
            f"{MAX_VOCAB_SIZE}"
        )
    if max_piece_length < 1:
        raise GenosError(f"--max-piece-length must be at least 1, got {max_piece_length}")
    if sentence_bp < 2:
        raise GenosError(f"--sentence-bp must be at least 2, got {sentence_bp}")
    if max_train_bp < sentence_bp:
        raise GenosError(
            f"--max-train-bp {max_train_bp} is smaller than one sentence (--sentence-bp "
            f"{sentence_bp})"
        )


def sample_sentences(
    inputs: Sequence[Path], *, sentence_bp: int, max_train_bp: int
) -> tuple[list[bytes], int]:
    """(sentences, total ACGT bp in the input): all fragments if they fit in `max_train_bp`,
    else an evenly spread subset of about `max_train_bp` bases (see module docstring)."""
    from genos_cli.data.fasta import read_acgt_runs

    # Pass 1 keeps everything while it fits the budget, so small inputs are read once.
    sentences: list[bytes] = []
    total = 0
    for run in read_acgt_runs(inputs, max_run_bp=sentence_bp):
        total += len(run)
        if total <= max_train_bp:
            sentences.append(run)
        elif sentences:
            sentences = []  # over budget: keep counting, then sample in pass 2
    if total <= max_train_bp:
        return sentences, total

    fraction = max_train_bp / total
    credit = sentence_bp / 2  # centres the picks: the first is about half a stride in
    for run in read_acgt_runs(inputs, max_run_bp=sentence_bp):
        credit += fraction * len(run)
        if credit >= len(run):
            credit -= len(run)
            sentences.append(run)
    return sentences, total


def _spread(items: list[bytes], budget_bp: int) -> list[bytes]:
    """Every k-th item, so that about `budget_bp` bases are taken from the whole list."""
    total = sum(map(len, items))
    step = max(1, total // max(budget_bp, 1))
    return items[::step]


def train_sentencepiece(
    inputs: Sequence[Path],
    output_prefix: Path,
    *,
    vocab_size: int = 128,
    max_piece_length: int = 16,
    sentence_bp: int = 1500,
    max_train_bp: int = 100_000_000,
    num_threads: int | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a BPE SentencePiece model on the DNA in `inputs`; write `PREFIX.model` and
    `PREFIX.vocab` (to temporary files beside them, renamed once both are complete), so a
    failure leaves neither file behind.

    SentencePiece settings are chosen for DNA: no normalisation (`identity`), no dummy
    whitespace prefix, every character kept (`character_coverage=1.0`), no byte fallback,
    pieces of at most `max_piece_length` bases. Special ids follow `META_PIECES` and
    `CONTROL_SYMBOLS` (control symbols are reserved ids that plain text can never produce).
    """
    validate_train_settings(
        vocab_size=vocab_size,
        max_piece_length=max_piece_length,
        sentence_bp=sentence_bp,
        max_train_bp=max_train_bp,
    )
    phase = on_phase or (lambda _msg: None)
    output_prefix = Path(output_prefix)
    if output_prefix.is_dir() or not output_prefix.name:
        raise GenosError(f"--output-prefix {output_prefix} is a directory; give a file prefix")

    phase("reading input")
    sentences, total_bp = sample_sentences(
        inputs, sentence_bp=sentence_bp, max_train_bp=max_train_bp
    )
    if not sentences:
        raise GenosError("the input contains no ACGT sequence to train on")
    bp_used = sum(map(len, sentences))

    phase(f"training on {bp_used:,} bp ({len(sentences):,} sentences)")
    start = time.perf_counter()
    blob = _train_bpe(
        sentences,
        vocab_size=vocab_size,
        max_piece_length=max_piece_length,
        sentence_bp=sentence_bp,
        num_threads=num_threads or os.cpu_count() or 1,
    )
    seconds = time.perf_counter() - start

    phase("checking the model")
    model_path, vocab_path, bp_per_token = _check_and_publish(blob, output_prefix, sentences)
    return TrainResult(
        model_path=model_path,
        vocab_path=vocab_path,
        vocab_size=vocab_size,
        sentences=len(sentences),
        bp_used=bp_used,
        bp_available=total_bp,
        seconds=seconds,
        bp_per_token=bp_per_token,
    )


# SentencePiece trainer settings for DNA, which is not natural-language text: no
# normalisation, no "▁" prefix, no whitespace handling, every base kept, no byte pieces.
_DNA_TRAINER_SETTINGS: dict[str, Any] = {
    "model_type": "bpe",
    "normalization_rule_name": "identity",
    "add_dummy_prefix": False,
    "remove_extra_whitespaces": False,
    "split_by_whitespace": False,
    "split_digits": False,
    "character_coverage": 1.0,
    "required_chars": BASES,
    "byte_fallback": False,
    "shuffle_input_sentence": True,
    "pad_id": 0,
    "unk_id": 1,
    "bos_id": 2,
    "eos_id": 3,
    "pad_piece": META_PIECES["pad"],
    "unk_piece": META_PIECES["unk"],
    "bos_piece": META_PIECES["bos"],
    "eos_piece": META_PIECES["eos"],
    # Control symbols reserve ids that text never produces and decode to nothing.
    "control_symbols": list(CONTROL_SYMBOLS),
    "unk_surface": "",
    "hard_vocab_limit": True,
}


def _train_bpe(
    sentences: list[bytes],
    *,
    vocab_size: int,
    max_piece_length: int,
    sentence_bp: int,
    num_threads: int,
) -> bytes:
    """The serialized SentencePiece model. It is returned in memory (`model_writer`) rather
    than written under a `model_prefix`, because SentencePiece records the prefix inside the
    model, which would make the bytes (and so the fingerprint) depend on a temporary path."""
    import sentencepiece as spm

    from genos_cli.data.tokenizers.bpe import sentencepiece_message

    out = io.BytesIO()
    # Silence the trainer's progress log (errors still arrive as RuntimeError). Not `logstream`:
    # it dup2()s over sys.stderr.fileno(), which fails where stderr is not a real file.
    spm.set_min_log_level(2)
    try:
        spm.SentencePieceTrainer.Train(
            sentence_iterator=iter(sentences),
            model_writer=out,
            vocab_size=vocab_size,
            max_sentencepiece_length=max_piece_length,
            max_sentence_length=sentence_bp + 1,
            # `sample_sentences` already sampled; SentencePiece keeps every sentence.
            input_sentence_size=max(len(sentences) + 1, 1000),  # SentencePiece: > 100
            num_threads=num_threads,
            **_DNA_TRAINER_SETTINGS,
        )
    except RuntimeError as exc:
        reason = sentencepiece_message(exc) or str(exc).strip()
        raise GenosError(f"SentencePiece training failed: {reason}") from None
    finally:
        spm.set_min_log_level(0)  # SentencePiece's default
    return out.getvalue()


def _check_and_publish(
    blob: bytes, output_prefix: Path, sentences: list[bytes]
) -> tuple[Path, Path, float]:
    """Load the trained model as genos will (which refuses one that is not DNA), measure its
    bp/token on a spread sample of the training sentences, then write PREFIX.vocab and
    PREFIX.model. Returns (model path, vocab path, bp per token)."""
    from genos_cli.data.tokenizers.bpe import SentencePieceDNATokenizer

    model_path = output_prefix.with_name(output_prefix.name + ".model")
    vocab_path = output_prefix.with_name(output_prefix.name + ".vocab")
    try:
        output_prefix.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GenosError(
            f"cannot create directory {output_prefix.parent} ({exc.strerror})"
        ) from None
    tmp_model = _write_temp(model_path, blob)
    tmp_vocab: Path | None = None
    try:
        tokenizer = SentencePieceDNATokenizer(tmp_model)
        tmp_vocab = _write_temp(vocab_path, _vocab_text(tokenizer.sp))
        sample = _spread(sentences, EVAL_SAMPLE_BP)
        tokens = sum(map(len, tokenizer.sp.encode([s.decode("ascii") for s in sample])))
        publish(tmp_vocab, vocab_path)
        publish(tmp_model, model_path)
    finally:
        for leftover in (tmp_model, tmp_vocab):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
    return model_path, vocab_path, sum(map(len, sample)) / max(tokens, 1)


def _vocab_text(sp: spm.SentencePieceProcessor) -> bytes:
    """The `.vocab` file SentencePiece writes beside a model: piece TAB score per line."""
    lines = (f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))
    return "".join(lines).encode("utf-8")


def _write_temp(path: Path, data: bytes) -> Path:
    """`data` in a temporary file beside `path`, to be published later; a GenosError naming
    `path` when it cannot be written."""
    try:
        return write_temp(path, data)
    except OSError as exc:
        raise GenosError(f"cannot write {path} ({exc.strerror})") from None


@dataclass(frozen=True)
class Compression:
    """Bases per token of one input file (or the first `sample_bp` bases of it)."""

    path: Path
    bp: int
    tokens: int

    @property
    def bp_per_token(self) -> float:
        return self.bp / self.tokens if self.tokens else 0.0


def measure_compression(
    tokenizer: DNATokenizer,
    inputs: Sequence[Path],
    *,
    sample_bp: int | None = 2_000_000,
    fragment_bp: int = 1500,
    num_threads: int = 1,
) -> list[Compression]:
    """For each input file, tokens per base over its first `sample_bp` ACGT bases (all of them
    when None), cut into `fragment_bp` fragments as in training (EOD ids not counted)."""
    from genos_cli.data.fasta import read_acgt_runs
    from genos_cli.data.sources import expand_inputs

    batch_bp = 8_000_000  # encode in batches to bound memory on whole genomes
    results = []
    for path in expand_inputs(inputs):
        bp = tokens = 0
        batch: list[bytes] = []
        pending = 0
        for run in read_acgt_runs([path], max_run_bp=fragment_bp):
            if sample_bp is not None and bp + pending + len(run) > sample_bp:
                run = run[: sample_bp - bp - pending]
            batch.append(run)
            pending += len(run)
            full = sample_bp is not None and bp + pending >= sample_bp
            if pending >= batch_bp or full:
                tokens += _count_tokens(tokenizer, batch, num_threads)
                bp, pending, batch = bp + pending, 0, []
            if full:
                break
        if batch:
            tokens += _count_tokens(tokenizer, batch, num_threads)
            bp += pending
        results.append(Compression(path=path, bp=bp, tokens=tokens))
    return results


def _count_tokens(tokenizer: DNATokenizer, runs: list[bytes], num_threads: int) -> int:
    runs = [r for r in runs if r]
    lengths = np.fromiter(map(len, runs), dtype=np.int64, count=len(runs))
    ids, _ = tokenizer.encode_packed(
        b"".join(runs), lengths, append_eod=False, num_threads=num_threads
    )
    return int(ids.size)
