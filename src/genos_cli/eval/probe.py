"""Linear probes: do a checkpoint's embeddings carry biological signal?

Each sequence becomes one vector, the mean over its tokens of the hidden states after a
chosen layer (the final norm's output by default); a logistic regression (scikit-learn,
inverse regularisation C chosen by 5-fold cross-validation on the training split) predicts
the class. The same classifier on k-mer frequencies is the baseline, on the same split.

Sequence policy: bases are uppercased and anything but A/C/G/T (N, IUPAC codes) is dropped,
as in training. Each sequence is preceded by the end-of-document id, as every document
follows one in training. A sequence longer than the context is cut into context-sized
pieces whose token states are pooled together, so the whole sequence counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from genos_cli.data.bases import base_codes
from genos_cli.data.fasta import RECORD_BREAK, ReadStats, SequenceReader
from genos_cli.data.tokenizers import DNATokenizer
from genos_cli.errors import GenosError
from genos_cli.model import GenosForCausalLM

_NON_ACGT = bytes(b for b in range(256) if b not in b"ACGT")


@dataclass
class LabelledSequences:
    sequences: list[bytes]
    labels: np.ndarray  # (N,) int64 class index
    classes: list[str]
    dropped_bases: int = 0


def _clean(seq: bytes) -> tuple[bytes, int]:
    kept = seq.upper().translate(None, _NON_ACGT)
    return kept, len(seq) - len(kept)


def read_fasta_records(path: Path) -> list[bytes]:
    """The sequences of a FASTA (or one-per-line text) file, normalised by genos's reader."""
    text = b"".join(SequenceReader(path, ReadStats()).blocks())
    return [r for r in text.split(RECORD_BREAK) if r]


def from_fasta_per_class(files: Sequence[Path], names: Sequence[str]) -> LabelledSequences:
    seqs: list[bytes] = []
    labels: list[int] = []
    dropped = 0
    for index, path in enumerate(files):
        count = 0
        for record in read_fasta_records(path):
            kept, lost = _clean(record)
            dropped += lost
            if kept:
                seqs.append(kept)
                labels.append(index)
                count += 1
        if count == 0:
            raise GenosError(f"{path} holds no sequence with A/C/G/T bases (class {names[index]})")
    return LabelledSequences(seqs, np.array(labels, np.int64), list(names), dropped)


def from_tsv(path: Path, classes: list[str] | None = None) -> LabelledSequences:
    """`sequence<TAB>label` lines (an optional header line `sequence<TAB>label`)."""
    if not path.is_file():
        raise GenosError(f"{path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise GenosError(f"{path} is not a UTF-8 text file") from None
    seqs: list[bytes] = []
    names: list[str] = []
    dropped = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise GenosError(
                f"{path}, line {number}: expected two tab-separated columns, sequence and label"
            )
        seq, label = fields[0].strip(), fields[1].strip()
        if number == 1 and seq.lower() == "sequence":
            continue  # the header
        kept, lost = _clean(seq.encode("ascii", "replace"))
        if not kept:
            raise GenosError(f"{path}, line {number}: the sequence has no A/C/G/T bases")
        dropped += lost
        seqs.append(kept)
        names.append(label)
    if not seqs:
        raise GenosError(f"{path} holds no sequences")
    classes = classes if classes is not None else sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise GenosError(
            f"{path} has label {unknown[0]!r}, not among the training labels ({', '.join(classes)})"
        )
    return LabelledSequences(seqs, np.array([index[n] for n in names], np.int64), classes, dropped)


# -- embeddings ------------------------------------------------------------------------------


@torch.inference_mode()
def embed(
    model: GenosForCausalLM,
    tokenizer: DNATokenizer,
    sequences: Sequence[bytes],
    *,
    layer: int | None = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """(mean-pooled hidden states (N, D) float32, tokens run through the model)."""
    piece = model.config.max_seq_length - 1  # room for the leading end-of-document id
    # Pieces of at most `piece` tokens, each remembering its sequence.
    pieces: list[tuple[int, list[int]]] = []
    for i, seq in enumerate(sequences):
        seq_ids = tokenizer.encode(seq.decode("ascii"))
        for s in range(0, len(seq_ids), piece):
            pieces.append((i, seq_ids[s : s + piece]))
    order = sorted(range(len(pieces)), key=lambda k: len(pieces[k][1]))  # little padding
    device = torch.device(device)
    sums = torch.zeros(len(sequences), model.config.hidden_size, dtype=torch.float64)
    counts = torch.zeros(len(sequences), dtype=torch.float64)
    forwarded = 0
    for b in range(0, len(order), batch_size):
        rows = [pieces[k] for k in order[b : b + batch_size]]
        width = 1 + max(len(ids) for _, ids in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_id, dtype=torch.int64)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, (_, toks) in enumerate(rows):
            ids[r, 0] = tokenizer.eod_id
            ids[r, 1 : 1 + len(toks)] = torch.tensor(toks)
            mask[r, 1 : 1 + len(toks)] = True  # pool the sequence's own tokens only
        forwarded += ids.numel()
        with torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype is not None):
            # Causal attention: padding on the right never reaches the tokens before it.
            states = model.hidden_states(ids.to(device), layer).float().cpu()  # (B, T, D)
        pooled = (states * mask[..., None]).sum(dim=1).double()  # (B, D)
        owners = torch.tensor([i for i, _ in rows])
        sums.index_add_(0, owners, pooled)
        counts.index_add_(0, owners, mask.sum(dim=1).double())
        if progress is not None:
            progress(min(b + batch_size, len(order)), len(order))
    return (sums / counts.clamp(min=1)[:, None]).float().numpy(), forwarded


def kmer_frequencies(sequences: Sequence[bytes], k: int) -> np.ndarray:
    """Overlapping k-mer frequencies of each sequence: (N, 4**k) float32."""
    out = np.zeros((len(sequences), 4**k), np.float32)
    for i, seq in enumerate(sequences):
        codes = base_codes(seq).astype(np.int64)
        if codes.size < k:
            continue
        index = np.zeros(codes.size - k + 1, np.int64)
        for j in range(k):
            index = index * 4 + codes[j : codes.size - k + 1 + j]
        row = np.bincount(index, minlength=4**k)
        out[i] = row / row.sum()
    return out


# -- classifier -------------------------------------------------------------------------------


@dataclass
class ProbeScores:
    name: str
    accuracy: float
    mcc: float
    macro_f1: float
    features: int
    c: float  # the regularisation cross-validation chose
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


def fit_and_score(
    name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    seed: int = 0, folds: int = 5,
) -> ProbeScores:  # fmt: skip
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    # The scaler is fitted inside each fold too: nothing of a held-out fold leaks into C.
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        {"logisticregression__C": np.logspace(-4, 2, 7).tolist()},
        cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
        scoring="accuracy",
    )
    search.fit(x_train, y_train)
    predicted = search.predict(x_test)
    return ProbeScores(
        name=name,
        accuracy=float(accuracy_score(y_test, predicted)),
        mcc=float(matthews_corrcoef(y_test, predicted)),
        macro_f1=float(f1_score(y_test, predicted, average="macro")),
        features=int(x_train.shape[1]),
        c=float(search.best_params_["logisticregression__C"]),
        seconds=time.perf_counter() - t0,
    )
