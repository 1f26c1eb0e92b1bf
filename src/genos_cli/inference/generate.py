"""Autoregressive generation of DNA: prompts in, sampled or greedy continuations out.

Conditioning is as in training: every document there follows an end-of-document (EOD) id,
so a prompt is read after one (no prompt: generation starts from EOD alone, i.e. from the
start of a document). The samples of one prompt are decoded together as a batch; the
prompt is read once and its cached keys and values copied to every row.

Tokens and bases: a BPE token spells several bases, so generation runs until every row has
spelled the requested number of bases and the last token's surplus bases are cut. Only ids
that spell A/C/G/T can be chosen: the end-of-document, pad, unk and other special ids (and
the nucleotide tokenizer's N and reserved ids) are masked out of every step's distribution,
so a sample is always exactly `num_bases` of DNA and never ends early.

Past the context: the model was trained on windows of `max_seq_length` tokens. When the
cache is full, the newer half of the sequence is read again from position 0 and decoding
goes on from there, so positions never leave the trained range (Hugging Face's `generate`
would instead run the rotary positions past it).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genos_cli.data.bases import token_piece
from genos_cli.data.fasta import read_fasta_records
from genos_cli.data.tokenizers import DNATokenizer
from genos_cli.errors import GenosError
from genos_cli.inference.kv_cache import KVCache, forward_cached
from genos_cli.inference.loading import load_for_inference
from genos_cli.inference.sampling import Sampling, choose
from genos_cli.model import GenosForCausalLM


@dataclass(frozen=True)
class Prompt:
    name: str
    bases: str  # uppercase A/C/G/T; "" = start from the end-of-document id alone


@dataclass(frozen=True)
class Sample:
    prompt: Prompt
    index: int  # 0-based sample number of its prompt
    bases: str  # exactly the requested number of generated bases
    token_ids: list[int]  # the generated tokens (the last may spell bases cut off)


@dataclass(frozen=True)
class BaseTokens:
    """What every token id spells, as generation needs it: a mask of the ids that may be
    chosen (those spelling A/C/G/T) and each id's bases, by the one rule of
    `genos_cli.data.bases` (a token spells the A/C/G/T of its piece; EOD, specials and N
    spell none, and so do ids past the tokenizer's vocabulary)."""

    allowed: torch.Tensor  # (V,) bool
    lengths: torch.Tensor  # (V,) int64 bases each id spells (0: special / non-ACGT)
    pieces: list[str]

    @classmethod
    def of(cls, tokenizer: DNATokenizer, vocab_size: int, device: torch.device) -> BaseTokens:
        pieces = [token_piece(tokenizer, i).decode("ascii") for i in range(tokenizer.vocab_size)]
        pieces += [""] * (vocab_size - len(pieces))  # ids past the tokenizer's: never chosen
        lengths = torch.tensor([len(p) for p in pieces], dtype=torch.int64, device=device)
        return cls(lengths > 0, lengths, pieces)

    @property
    def longest(self) -> int:
        return int(self.lengths.max())


def decode_tokens(
    model: GenosForCausalLM,
    ids: Sequence[int],
    rows: int,
    num_bases: int,
    tokens: BaseTokens,
    sampling: Sampling,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`rows` continuations of the token sequence `ids` (EOD + prompt), each until it spells
    at least `num_bases` bases: (rows, steps) int64 on the CPU, every row as long as the
    slowest needed (rows that are done keep decoding; their extra tokens are cut later)."""
    cfg = model.config
    context = cfg.max_seq_length
    device = model.embed.weight.device
    if len(ids) >= context:  # keep the newer half, as when the cache fills while decoding
        ids = ids[-(context // 2) :]
    n, max_steps = len(ids), num_bases  # every allowed token spells at least one base
    history = torch.empty(rows, n + max_steps, dtype=torch.int64, device=device)
    history[:, :n] = torch.tensor(ids, dtype=torch.int64, device=device)
    cache = KVCache.allocate(
        cfg, rows, min(context, n + max_steps), device=device, dtype=model.embed.weight.dtype
    )
    first = cache.rows(1)  # read the prompt once, then copy its keys/values to every row
    logits = forward_cached(model, first, history[:1, :n]).expand(rows, -1)  # (rows, V)
    cache.length = first.length
    cache.broadcast_first_row()
    spelled = torch.zeros(rows, dtype=torch.int64, device=device)
    min_steps = math.ceil(num_bases / tokens.longest)  # no row can be done before this
    check_every = 1 if device.type == "cpu" else 8  # a GPU check is a host sync
    steps = 0
    while steps < max_steps:
        token = choose(logits, tokens.allowed, sampling, generator)  # (rows,)
        history[:, n + steps] = token
        spelled += tokens.lengths[token]
        steps += 1
        check = steps >= min_steps and (steps - min_steps) % check_every == 0
        if steps == max_steps or (check and bool((spelled >= num_bases).all())):
            break
        if cache.length == cache.capacity:  # the context is full: re-read its newer half
            cache.length = 0
            logits = forward_cached(model, cache, history[:, n + steps - context // 2 : n + steps])
        else:
            logits = forward_cached(model, cache, token[:, None])
    return history[:, n : n + steps].cpu()


def _trim(row: list[int], num_bases: int, tokens: BaseTokens) -> tuple[str, list[int]]:
    """The first `num_bases` bases of a row of tokens, and the tokens that spell them."""
    out: list[str] = []
    spelled = 0
    for i, token in enumerate(row):
        out.append(tokens.pieces[token])
        spelled += len(tokens.pieces[token])
        if spelled >= num_bases:
            return "".join(out)[:num_bases], row[: i + 1]
    raise AssertionError("decode_tokens returned a row shorter than asked")  # pragma: no cover


@torch.inference_mode()
def generate(
    model: GenosForCausalLM,
    tokenizer: DNATokenizer,
    prompts: Sequence[Prompt],
    *,
    num_bases: int,
    num_samples: int = 1,
    sampling: Sampling | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> Iterator[Sample]:
    """`num_samples` continuations of `num_bases` bases for each prompt, in order.

    One torch generator seeded with `seed` drives all sampling, so the same prompts, options
    and seed give the same output. Samples of a prompt are decoded `batch_size` at a time.
    """
    sampling = sampling or Sampling()
    device = model.embed.weight.device
    tokens = BaseTokens.of(tokenizer, model.config.resolved_vocab_size, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    for prompt in prompts:
        ids = [tokenizer.eod_id, *tokenizer.encode(prompt.bases)]
        for first in range(0, num_samples, batch_size):
            rows = min(batch_size, num_samples - first)
            out = decode_tokens(model, ids, rows, num_bases, tokens, sampling, generator)
            for r, row in enumerate(out.tolist()):
                bases, used = _trim(row, num_bases, tokens)
                yield Sample(prompt, first + r, bases, used)


# -- the command: prompts from the user, FASTA out ---------------------------------------------

FASTA_WIDTH = 80  # bases per FASTA line
Progress = Callable[[str, int, int], None]  # (what, done, total)


def _check_bases(text: str, where: str) -> str:
    seq = text.strip().upper()
    bad = next((i for i, c in enumerate(seq) if c not in "ACGT"), None)
    if bad is not None:
        raise GenosError(
            f"{where} has {seq[bad]!r} at position {bad + 1}; a prompt is A/C/G/T bases only"
        )
    return seq


def read_prompts(prompt: str | None, fasta: Path | None) -> list[Prompt]:
    """The prompts `--prompt` or `--fasta` give (one record, one prompt), or the empty prompt
    (generation from the end-of-document id) when neither is given."""
    if prompt is not None and fasta is not None:
        raise GenosError("give --prompt or --fasta, not both")
    if prompt is not None:
        return [Prompt("prompt", _check_bases(prompt, "--prompt"))]
    if fasta is None:
        return [Prompt("genos", "")]
    return [
        Prompt(r.id, _check_bases(r.sequence.decode("ascii"), f"{fasta}, record {r.id!r}"))
        for r in read_fasta_records(fasta)
    ]


@dataclass
class GenerateOptions:
    checkpoint: Path
    prompt: str | None = None
    fasta: Path | None = None
    num_bases: int = 1000
    num_samples: int = 1
    sampling: Sampling = field(default_factory=Sampling)
    seed: int | None = None  # None: a random seed, reported and written to every header
    batch_size: int = 16
    include_prompt: bool = False
    device: str | None = None

    def check(self) -> None:
        for flag, value in (("--num-bases", self.num_bases), ("--num-samples", self.num_samples),
                            ("--batch-size", self.batch_size)):  # fmt: skip
            if value < 1:
                raise GenosError(f"{flag} must be at least 1, got {value}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise GenosError(f"--seed must be in [0, 2^63), got {self.seed}")


@dataclass
class GenerateSummary:
    checkpoint: str  # its step directory and step (`LoadedCheckpoint.describe`)
    prompts: int
    samples: int
    bases: int
    tokens: int
    seed: int
    device: str
    seconds: float


def _header(sample: Sample, opts: GenerateOptions, seed: int) -> str:
    s = opts.sampling
    return (
        f">{sample.prompt.name}_sample{sample.index + 1} prompt_bp={len(sample.prompt.bases)} "
        f"generated_bp={len(sample.bases)} seed={seed} temperature={s.temperature:g} "
        f"top_k={s.top_k} top_p={s.top_p:g}"
    )


def generate_fasta(
    opts: GenerateOptions, out: Path, progress: Progress | None = None
) -> GenerateSummary:
    """Generate what `opts` asks for and write it to `out` as FASTA (generated bases only, or
    prompt + generated with `include_prompt`)."""
    opts.check()
    prompts = read_prompts(opts.prompt, opts.fasta)
    seed = opts.seed if opts.seed is not None else secrets.randbits(63)
    ckpt = load_for_inference(opts.checkpoint, opts.device)
    total = len(prompts) * opts.num_samples
    done = tokens = 0
    t0 = time.perf_counter()
    with out.open("w", encoding="ascii") as fh:
        for sample in generate(
            ckpt.model, ckpt.tokenizer, prompts, num_bases=opts.num_bases,
            num_samples=opts.num_samples, sampling=opts.sampling, seed=seed,
            batch_size=opts.batch_size,
        ):  # fmt: skip
            seq = sample.prompt.bases + sample.bases if opts.include_prompt else sample.bases
            fh.write(_header(sample, opts, seed) + "\n")
            for i in range(0, len(seq), FASTA_WIDTH):
                fh.write(seq[i : i + FASTA_WIDTH] + "\n")
            done += 1
            tokens += len(sample.token_ids)
            if progress is not None:
                progress("generating", done, total)
    return GenerateSummary(
        checkpoint=ckpt.describe(), prompts=len(prompts), samples=done,
        bases=done * opts.num_bases, tokens=tokens, seed=seed,
        device=str(ckpt.model.embed.weight.device), seconds=time.perf_counter() - t0,
    )  # fmt: skip
