"""Training data: packed token windows over Megatron `.bin/.idx`, sharded per rank, resumable.

Samples (like megatron-core's `GPTDataset`, without its on-disk index cache):

- The documents of all prefixes (a blend is their concatenation) are put in a seeded random
  order and read as one token stream, eod ids included: documents are packed across their
  boundaries, so no token is padding.
- Sample `i` of an epoch is the window `stream[i*T : i*T + T + 1]` (T = `seq_length`);
  `input_ids = window[:-1]`, `labels = window[1:]`. Consecutive windows overlap by one token
  (the last label of one is the first input of the next), so every token of the epoch is an
  input exactly once, except the `(num_tokens - 1) % T + 1` tokens at the end of the stream.
- An epoch holds `(num_tokens - 1) // T` samples. Global sample indices run on across epochs;
  epoch `e` uses its own document order, drawn from `RandomState([seed, e])`.

Batches: step `s` uses the global samples `[s*G, (s+1)*G)`, G = micro * grad_accum * dp_world,
laid out like Megatron-LM's `MegatronPretrainingSampler`: micro-step `m` of rank `r` takes
`s*G + (m*W + r)*B + [0, B)`. The layout depends only on the step, so a resumed run (even
with another data-parallel size but the same global batch) continues with the exact next batch.

Bits per base: total negative log-likelihood in bits over all predicted tokens (eod ids
included) divided by the bases those tokens spell (specials and eod spell none). See
docs/training-data.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genos_cli.data.indexed import IndexedDataset, bin_path, idx_path
from genos_cli.data.pipeline import output_prefixes
from genos_cli.errors import GenosError
from genos_cli.jsonfile import read_json

if TYPE_CHECKING:
    import torch

    from genos_cli.data.tokenizers import DNATokenizer

PathLike = str | Path
_SEED_LIMIT = 2**32  # RandomState seeds are uint32 words
_SCAN_CHUNK = 1 << 24  # tokens per chunk when scanning for the largest id


# -- document order and sample index (pure) -------------------------------------------------


def epoch_rng(seed: int, epoch: int) -> np.random.RandomState:
    """The random stream of one epoch.

    `RandomState` rather than `Generator`: its stream is frozen by NumPy's compatibility
    policy (NEP 19), so a checkpoint resumes on the same order after a NumPy upgrade.
    Seeding with the array `[seed, epoch]` (Mersenne Twister `init_by_array`) gives every
    epoch its own stream, the epoch-specific seed Megatron derives per epoch too.
    """
    return np.random.RandomState([seed, epoch])


@dataclass(frozen=True)
class EpochIndex:
    """Where everything is in one epoch's token stream."""

    order: np.ndarray  # (D,) int64: document ids in reading order
    offsets: np.ndarray  # (D+1,) int64: stream position where order[k] starts; [-1] = total
    sample_docs: np.ndarray  # (S,) int64: k such that sample i starts inside order[k]


def build_epoch_index(
    doc_lengths: np.ndarray, seq_length: int, num_samples: int, seed: int, epoch: int
) -> EpochIndex:
    """Shuffle the documents and locate each sample's first document, vectorised.

    `doc_lengths` (D,) are token counts. The sample index plays the part of Megatron's
    `sample_idx`: sample i starts at stream position i*T, in document `order[sample_docs[i]]`.
    """
    order = epoch_rng(seed, epoch).permutation(doc_lengths.size).astype(np.int64)
    offsets = np.zeros(doc_lengths.size + 1, np.int64)
    np.cumsum(doc_lengths[order], out=offsets[1:])
    starts = np.arange(num_samples, dtype=np.int64) * seq_length
    # side="right" then -1: the last document starting at or before the position, which
    # skips empty documents (they share their offset with the next one).
    sample_docs = np.searchsorted(offsets, starts, side="right") - 1
    return EpochIndex(order=order, offsets=offsets, sample_docs=sample_docs)


def _document_spans(ds: IndexedDataset) -> tuple[np.ndarray, np.ndarray]:
    """(token start, token count) of each document of `ds`, both (D,) int64.

    A Megatron document is a run of consecutive sequences (genos writes one per document),
    and a valid `.bin` holds the sequences back to back, so a document is one contiguous span.
    """
    lengths = ds.sequence_lengths.astype(np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    if not np.array_equal(ds.sequence_pointers, starts * ds.dtype.itemsize):
        raise GenosError(
            f"{idx_path(ds.prefix)} has sequences that are not stored back to back in "
            f"{bin_path(ds.prefix)}; rewrite the data with genos preprocess"
        )
    doc = ds.document_indices
    n = lengths.size
    if doc.size < 1 or doc[0] != 0 or doc[-1] != n or np.any(np.diff(doc) < 0):
        raise GenosError(f"{idx_path(ds.prefix)} has an invalid document index")
    token_at = np.concatenate([[0], ends])  # (S+1,) token offset of each sequence start
    first, last = token_at[doc[:-1]], token_at[doc[1:]]
    return first, last - first


# -- the dataset ----------------------------------------------------------------------------


class PackedTokenDataset:
    """Windows of `seq_length + 1` tokens over shuffled, packed documents (see module doc).

    The tokens stay memory-mapped; the only arrays built are per-document (three int64 per
    document) and per-epoch (order, offsets, sample index), so millions of documents are fine.
    `len()` is the samples of one epoch; `sample(i)` takes any global index (epochs included).
    """

    def __init__(self, prefixes: Sequence[PathLike], seq_length: int, seed: int) -> None:
        if seq_length < 1:
            raise GenosError(f"seq_length must be at least 1, got {seq_length}")
        if not 0 <= seed < _SEED_LIMIT:
            raise GenosError(f"the data seed must be in [0, 2**32), got {seed}")
        if not prefixes:
            raise GenosError("no training data given")
        self.prefixes = tuple(Path(p) for p in prefixes)
        self.seq_length = seq_length
        self.seed = seed
        self._sources = [IndexedDataset(p) for p in self.prefixes]
        spans = [_document_spans(ds) for ds in self._sources]
        self._doc_start = np.concatenate([s for s, _ in spans])  # (D,) within its source
        self._doc_length = np.concatenate([n for _, n in spans])  # (D,)
        self._doc_source = np.concatenate(
            [np.full(n.size, k, np.int32) for k, (_, n) in enumerate(spans)]
        )  # (D,)
        self.num_documents = int(self._doc_length.size)
        self.num_tokens = int(self._doc_length.sum())
        self.samples_per_epoch = max(self.num_tokens - 1, 0) // seq_length
        if self.samples_per_epoch == 0:
            names = ", ".join(str(p) for p in self.prefixes)
            raise GenosError(
                f"{names} holds {self.num_tokens} tokens, fewer than the {seq_length + 1} "
                "one training sample needs; use more data or a shorter seq_length"
            )
        self._epochs: dict[int, EpochIndex] = {}

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, i: int) -> np.ndarray:
        return self.sample(i)

    # np.memmap pickles as a full copy: ship the recipe instead (DataLoader workers, spawn).
    def __getstate__(self) -> dict[str, Any]:
        return {"prefixes": self.prefixes, "seq_length": self.seq_length, "seed": self.seed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["prefixes"], state["seq_length"], state["seed"])  # type: ignore[misc]

    def epoch_index(self, epoch: int) -> EpochIndex:
        """The epoch's order and sample index, built once and kept for the two latest epochs
        (a global batch may straddle an epoch boundary)."""
        if epoch not in self._epochs:
            if len(self._epochs) >= 2:
                del self._epochs[min(self._epochs)]
            self._epochs[epoch] = build_epoch_index(
                self._doc_length, self.seq_length, self.samples_per_epoch, self.seed, epoch
            )
        return self._epochs[epoch]

    def sample(self, i: int) -> np.ndarray:
        """Global sample `i`: (seq_length + 1,) int64 tokens."""
        if i < 0:
            raise IndexError(f"sample index {i} is negative")
        epoch, local = divmod(int(i), self.samples_per_epoch)
        index = self.epoch_index(epoch)
        width = self.seq_length + 1
        out = np.empty(width, np.int64)  # (T+1,)
        k = int(index.sample_docs[local])
        skip = local * self.seq_length - int(index.offsets[k])  # tokens of order[k] before it
        filled = 0
        while filled < width:  # over the few documents this window touches
            doc = int(index.order[k])
            take = min(int(self._doc_length[doc]) - skip, width - filled)
            start = int(self._doc_start[doc]) + skip
            tokens = self._sources[int(self._doc_source[doc])].tokens
            out[filled : filled + take] = tokens[start : start + take]
            filled += take
            skip = 0
            k += 1
        return out

    def samples(self, indices: np.ndarray) -> np.ndarray:
        """Global samples `indices` (N,): (N, seq_length + 1) int64."""
        flat = np.asarray(indices, np.int64).ravel()
        out = np.empty((flat.size, self.seq_length + 1), np.int64)
        for row, i in enumerate(flat.tolist()):
            out[row] = self.sample(i)
        return out


# -- batches per step and rank --------------------------------------------------------------


def step_sample_indices(
    step: int, micro_batch_size: int, grad_accum: int, dp_rank: int, dp_world_size: int
) -> np.ndarray:
    """Global sample indices of rank `dp_rank` at optimizer step `step`: (grad_accum, B).

    Micro-step m of rank r takes `step*G + (m*W + r)*B + [0, B)` (Megatron-LM's
    `MegatronPretrainingSampler` layout): the ranks' shares are disjoint and together are
    exactly `[step*G, (step+1)*G)`, and a 1-rank run with `grad_accum * W` reads, micro-step
    by micro-step, the same batches as the W ranks read together.
    """
    b, w = micro_batch_size, dp_world_size
    g = b * grad_accum * w
    micro = np.arange(grad_accum, dtype=np.int64)[:, None]  # (A, 1)
    row = np.arange(b, dtype=np.int64)[None, :]  # (1, B)
    return step * g + (micro * w + dp_rank) * b + row  # (A, B)


@dataclass(frozen=True)
class MicroBatch:
    input_ids: torch.Tensor  # (B, T) int64
    labels: torch.Tensor  # (B, T) int64: input_ids shifted left by one


def to_micro_batch(windows: np.ndarray) -> MicroBatch:
    """(B, T+1) token windows → inputs and next-token labels as LongTensors."""
    import torch  # lazily: `genos --help` must not pay for torch

    return MicroBatch(
        input_ids=torch.from_numpy(np.ascontiguousarray(windows[:, :-1])),
        labels=torch.from_numpy(np.ascontiguousarray(windows[:, 1:])),
    )


class ShardedBatches:
    """This rank's micro-batches, one list of `grad_accum` per optimizer step.

    Iterating yields the batches of `self.step` and advances it, without end (epochs follow
    one another). `state_dict()` after consuming step s records s + 1, the next step, so a
    run restored with `load_state_dict` continues with exactly the batch it would have seen.
    """

    def __init__(
        self,
        dataset: PackedTokenDataset,
        micro_batch_size: int,
        grad_accum: int = 1,
        dp_rank: int = 0,
        dp_world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        for name, value in (
            ("micro_batch_size", micro_batch_size),
            ("grad_accum", grad_accum),
            ("dp_world_size", dp_world_size),
        ):
            if value < 1:
                raise GenosError(f"{name} must be at least 1, got {value}")
        if not 0 <= dp_rank < dp_world_size:
            raise GenosError(f"dp_rank must be in [0, {dp_world_size}), got {dp_rank}")
        if start_step < 0:
            raise GenosError(f"start_step must be at least 0, got {start_step}")
        self.dataset = dataset
        self.micro_batch_size = micro_batch_size
        self.grad_accum = grad_accum
        self.dp_rank = dp_rank
        self.dp_world_size = dp_world_size
        self.step = start_step

    @property
    def global_batch_size(self) -> int:
        """Samples per optimizer step, all ranks together."""
        return self.micro_batch_size * self.grad_accum * self.dp_world_size

    @property
    def epoch(self) -> float:
        """Epochs consumed before `self.step` (fractional)."""
        return self.step * self.global_batch_size / self.dataset.samples_per_epoch

    def indices(self, step: int) -> np.ndarray:
        """This rank's global sample indices at `step`: (grad_accum, micro_batch_size)."""
        return step_sample_indices(
            step, self.micro_batch_size, self.grad_accum, self.dp_rank, self.dp_world_size
        )

    def batches(self, step: int) -> list[MicroBatch]:
        """This rank's micro-batches at `step` (does not move the position)."""
        return [to_micro_batch(self.dataset.samples(row)) for row in self.indices(step)]

    def __iter__(self) -> Iterator[list[MicroBatch]]:
        return self

    def __next__(self) -> list[MicroBatch]:
        out = self.batches(self.step)
        self.step += 1
        return out

    def state_dict(self) -> dict[str, int]:
        """The position (the next step) and what makes it mean the same samples again."""
        return {
            "step": self.step,
            "global_batch_size": self.global_batch_size,
            "seq_length": self.dataset.seq_length,
            "seed": self.dataset.seed,
            "samples_per_epoch": self.dataset.samples_per_epoch,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at `state["step"]`; refuse a state whose steps meant other samples.

        The data-parallel size may differ (the layout is defined per global batch), the
        global batch size, sequence length, seed and data may not.
        """
        mine = self.state_dict()
        what = {
            "global_batch_size": "global batch size",
            "seq_length": "sequence length",
            "seed": "data seed",
            "samples_per_epoch": "number of samples per epoch (the data changed)",
        }
        for key, label in what.items():
            if key in state and int(state[key]) != mine[key]:
                raise GenosError(
                    f"the checkpoint's data position was saved with {label} {state[key]}, but "
                    f"this run has {mine[key]}; resume with the same data and batch settings"
                )
        step = int(state["step"])
        if step < 0:
            raise GenosError(f"the checkpoint's data position is a negative step ({step})")
        self.step = step


# -- bits per base (pure) -------------------------------------------------------------------


def bases_per_token(tokenizer: DNATokenizer) -> np.ndarray:
    """Bases each token id spells: (vocab_size,) float64.

    A piece's length in characters (nucleotide A/C/G/T/N: 1; BPE: the piece's length);
    special ids, the eod id and reserved ids spell no DNA: 0. One pass over the vocabulary.
    """
    table = np.zeros(tokenizer.vocab_size, np.float64)
    for i in range(tokenizer.vocab_size):
        if i != tokenizer.eod_id and not tokenizer.is_special(i):
            table[i] = len(tokenizer.id_to_piece(i))
    return table


def bits_per_base(nll_nats_sum: float, bases: float) -> float:
    """Total NLL in bits over all predicted tokens divided by the bases they spell.

    bpb = sum_t -ln p(x_t | x_<t) / ln 2 / sum_t bases(x_t), summed over every predicted
    token t, eod ids included (their loss counts, their bases are 0). Comparable across
    tokenizers, unlike loss per token: it is the compression rate of the DNA in bits per
    nucleotide (2 bits = a uniform guess over A/C/G/T).
    """
    if bases <= 0:
        raise ValueError(f"bits per base needs a positive number of bases, got {bases}")
    return float(nll_nats_sum) / math.log(2) / float(bases)


def label_bases(labels: torch.Tensor, table: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Bases spelled by the tokens in `labels` (any shape) as a 0-dim float64 tensor on the
    labels' device (no host sync). Negative labels (an ignore_index) count 0."""
    import torch

    table_t = torch.as_tensor(table, dtype=torch.float64, device=labels.device)  # (V,)
    keep = labels >= 0
    return torch.where(keep, table_t[labels.clamp(min=0)], 0.0).sum()


# -- what --data-path names -----------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerInfo:
    """The tokenizer a data set was made with, from its manifest."""

    source: str  # the data set's name for messages, e.g. "data/ecoli"
    kind: str
    fingerprint: str
    vocab_size: int
    eod_id: int
    append_eod: bool = True


@dataclass(frozen=True)
class DataSpec:
    """Resolved `--data-path`: the prefixes to read and what the data says about itself."""

    train: tuple[Path, ...]
    val: tuple[Path, ...]
    tokenizer: TokenizerInfo | None  # None when no manifest was found
    manifests: tuple[Path, ...] = ()


def load_data_manifest(path: PathLike) -> dict[str, Any]:
    """The JSON manifest `genos preprocess` wrote (`PREFIX.json`), checked for what training
    reads. `path` is the manifest or the `-o` prefix it belongs to."""
    manifest = Path(path) if str(path).endswith(".json") else Path(f"{path}.json")
    if not manifest.is_file():
        raise GenosError(f"{manifest} does not exist (expected the manifest of genos preprocess)")
    data = read_json(manifest)
    tok = data.get("tokenizer") if isinstance(data, dict) else None
    outputs = data.get("outputs") if isinstance(data, dict) else None
    keys = ("kind", "fingerprint", "vocab_size", "eod_id")
    if not isinstance(tok, dict) or any(k not in tok for k in keys):
        raise GenosError(
            f"{manifest} is not a genos data manifest (its 'tokenizer' entry lacks "
            f"{', '.join(keys)})"
        )
    if not isinstance(outputs, dict) or "train" not in outputs:
        raise GenosError(f"{manifest} is not a genos data manifest (no 'outputs.train' entry)")
    return data


def _tokenizer_info(manifest: dict[str, Any], source: str) -> TokenizerInfo:
    tok = manifest["tokenizer"]
    return TokenizerInfo(
        source=source,
        kind=str(tok["kind"]),
        fingerprint=str(tok["fingerprint"]),
        vocab_size=int(tok["vocab_size"]),
        eod_id=int(tok["eod_id"]),
        append_eod=bool(tok.get("append_eod", True)),
    )


def _missing_file(prefix: PathLike) -> Path | None:
    """The first of `prefix.bin`, `prefix.idx` that is not a file, or None."""
    return next((p for p in (bin_path(prefix), idx_path(prefix)) if not p.is_file()), None)


def _split_prefix(base: str, manifest_path: Path, manifest: dict[str, Any], name: str) -> Path:
    """Where split `name` of the manifest's data set lives: beside the manifest, under
    genos's names. Not the prefix recorded in the manifest, which is relative to wherever
    preprocessing ran: a data set directory can be moved or shared as a whole."""
    prefix = output_prefixes(Path(base), "val" in manifest["outputs"])[name]
    missing = _missing_file(prefix)
    if missing is not None:
        raise GenosError(
            f"{missing} does not exist (listed in {manifest_path}); run genos preprocess again"
        )
    return prefix


_SUFFIXES = ("_train_text_document", "_val_text_document", "_text_document")


@dataclass(frozen=True)
class _Entry:
    """What one path names: a whole data set (manifest) or one `.bin/.idx` prefix."""

    train: list[Path]
    val: list[Path]
    tokenizer: TokenizerInfo | None
    manifest: Path | None


def _resolve_entry(path: PathLike) -> _Entry:
    text = str(path)
    for ext in (".bin", ".idx"):  # a data file given for its prefix
        if text.endswith(ext):
            text = text[: -len(ext)]
    if text.endswith(".json") or Path(f"{text}.json").is_file():
        base = text[:-5] if text.endswith(".json") else text
        manifest_path = Path(f"{base}.json")
        manifest = load_data_manifest(manifest_path)
        splits = [s for s in ("train", "val") if s in manifest["outputs"]]
        found = {s: [_split_prefix(base, manifest_path, manifest, s)] for s in splits}
        return _Entry(
            train=found["train"],
            val=found.get("val", []),
            tokenizer=_tokenizer_info(manifest, base),
            manifest=manifest_path,
        )
    prefix = Path(text)
    if not (bin_path(prefix).exists() or idx_path(prefix).exists()):
        raise GenosError(
            f"{text} names no data: expected {text}.json (from genos preprocess -o {text}) "
            f"or {text}.bin and {text}.idx"
        )
    missing = _missing_file(prefix)
    if missing is not None:
        raise GenosError(f"{missing} does not exist (a data set needs both .bin and .idx)")
    # A direct `<base>_..._text_document` prefix: its tokenizer is in `<base>.json`, if there.
    for suffix in _SUFFIXES:
        manifest_path = Path(f"{text[: -len(suffix)]}.json")
        if text.endswith(suffix) and manifest_path.is_file():
            info = _tokenizer_info(load_data_manifest(manifest_path), text[: -len(suffix)])
            return _Entry(train=[prefix], val=[], tokenizer=info, manifest=manifest_path)
    return _Entry(train=[prefix], val=[], tokenizer=None, manifest=None)


def _entries(paths: PathLike | Sequence[PathLike]) -> list[_Entry]:
    return [_resolve_entry(p) for p in ([paths] if isinstance(paths, str | Path) else paths)]


def _agreeing(infos: list[TokenizerInfo]) -> TokenizerInfo | None:
    for other in infos[1:]:
        if (other.fingerprint, other.vocab_size) != (infos[0].fingerprint, infos[0].vocab_size):
            raise GenosError(
                f"{infos[0].source} and {other.source} were made with different tokenizers "
                f"({infos[0].kind} {infos[0].fingerprint[:16]} vs {other.kind} "
                f"{other.fingerprint[:16]}); train on data made with one tokenizer"
            )
    return infos[0] if infos else None


def resolve_data(
    data_path: PathLike | Sequence[PathLike], val_path: PathLike | Sequence[PathLike] | None = None
) -> DataSpec:
    """Resolve `--data-path` (and an optional validation path) to checked prefixes.

    Each entry is one of:
    - the `-o` prefix of `genos preprocess` (`data/ecoli`) or its manifest (`data/ecoli.json`):
      train and val prefixes from the manifest;
    - a `.bin/.idx` prefix (`data/ecoli_train_text_document`, or one made by Megatron-LM):
      training data only, no validation data unless `val_path` is given. Its tokenizer is
      read from the manifest beside it (`data/ecoli.json`) when there is one.
    Several entries are blended (concatenated). `val_path` replaces the manifests' validation
    splits; a manifest prefix given there contributes its val split (its only data set if it
    has no split). Every named `.bin`/`.idx` must exist and all manifests must agree on the
    tokenizer.
    """
    train_entries = _entries(data_path)
    if not train_entries:
        raise GenosError("no --data-path given")
    val_entries = _entries(val_path) if val_path is not None else []
    train = [p for e in train_entries for p in e.train]
    if val_path is None:
        val = [p for e in train_entries for p in e.val]
    else:
        val = [p for e in val_entries for p in (e.val or e.train)]
    named = [e for e in (*train_entries, *val_entries) if e.tokenizer is not None]
    return DataSpec(
        train=tuple(train),
        val=tuple(val),
        tokenizer=_agreeing([e.tokenizer for e in named if e.tokenizer is not None]),
        manifests=tuple(dict.fromkeys(e.manifest for e in named if e.manifest is not None)),
    )


# -- checks before training -----------------------------------------------------------------


def check_tokenizer_matches(info: TokenizerInfo | None, tokenizer: DNATokenizer) -> None:
    """Refuse to train with a tokenizer other than the one the data was made with.

    Without a manifest (`info` None) there is nothing to compare; the vocabulary check
    below still guards the embedding.
    """
    if info is None:
        return
    ours = (tokenizer.fingerprint(), tokenizer.vocab_size, tokenizer.eod_id)
    if (info.fingerprint, info.vocab_size, info.eod_id) != ours:
        raise GenosError(
            f"{info.source} was made with the {info.kind} tokenizer (fingerprint "
            f"{info.fingerprint[:16]}, vocabulary {info.vocab_size}), but this run uses the "
            f"{tokenizer.kind} tokenizer (fingerprint {ours[0][:16]}, vocabulary {ours[1]}); "
            "train with the data's tokenizer or run genos preprocess again with this one"
        )


def max_token_id(prefixes: Sequence[PathLike]) -> int:
    """The largest token id in the data: a sequential read of the memory-mapped tokens."""
    best = -1
    for prefix in prefixes:
        tokens = IndexedDataset(prefix).tokens
        for start in range(0, tokens.size, _SCAN_CHUNK):
            best = max(best, int(tokens[start : start + _SCAN_CHUNK].max()))
    return best


def check_vocab_fits(spec: DataSpec, vocab_size: int) -> None:
    """Every token id of the data must be below the model's `vocab_size` (its embedding
    rows); an id past the end would fail deep inside CUDA as a device-side assert.

    Free with a manifest (its tokenizer's vocabulary bounds the ids) or when the storage
    dtype cannot hold an id that large; otherwise the tokens are scanned once.
    """
    prefixes = (*spec.train, *spec.val)
    if spec.tokenizer is not None:
        if spec.tokenizer.vocab_size > vocab_size:
            raise GenosError(
                f"{spec.tokenizer.source} uses token ids up to {spec.tokenizer.vocab_size - 1} "
                f"(tokenizer vocabulary {spec.tokenizer.vocab_size}), but the model's "
                f"vocab_size is {vocab_size}; set vocab_size to at least "
                f"{spec.tokenizer.vocab_size}"
            )
        return
    dtypes = [IndexedDataset(p).dtype for p in prefixes]
    if all(np.issubdtype(d, np.integer) and np.iinfo(d).max < vocab_size for d in dtypes):
        return
    largest = max_token_id(prefixes)
    if largest >= vocab_size:
        raise GenosError(
            f"{', '.join(str(p) for p in prefixes)} contains token id {largest}, but the "
            f"model's vocab_size is {vocab_size}; set vocab_size to at least {largest + 1}"
        )
