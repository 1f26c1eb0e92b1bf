"""Linear probes: do a checkpoint's embeddings carry biological signal?

Each sequence becomes one vector, the mean over its tokens of the hidden states after a
chosen layer (the final norm's output by default), computed by `genos_cli.inference.embed`,
the code of `genos embed`; a logistic regression (scikit-learn, inverse regularisation C
chosen by 5-fold cross-validation on the training split) predicts the class. The same
classifier on k-mer frequencies is the baseline, on the same split.

Sequence policy: bases are uppercased and anything but A/C/G/T (N, IUPAC codes) is dropped,
as in training. Each sequence is preceded by the end-of-document id, as every document
follows one in training. A sequence longer than the context is cut into context-sized
pieces whose token states are pooled together, so the whole sequence counts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genos_cli.data.bases import base_codes
from genos_cli.data.fasta import RECORD_BREAK, ReadStats, SequenceReader
from genos_cli.data.tsv import tsv_rows
from genos_cli.errors import GenosError

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


def _sequences_of(path: Path) -> list[bytes]:
    """The sequences of a FASTA (or one-per-line text) file, normalised by genos's reader."""
    text = b"".join(SequenceReader(path, ReadStats()).blocks())
    return [r for r in text.split(RECORD_BREAK) if r]


def from_fasta_per_class(files: Sequence[Path], names: Sequence[str]) -> LabelledSequences:
    seqs: list[bytes] = []
    labels: list[int] = []
    dropped = 0
    for index, path in enumerate(files):
        count = 0
        for record in _sequences_of(path):
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
    seqs: list[bytes] = []
    names: list[str] = []
    dropped = 0
    for number, fields in tsv_rows(path):
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise GenosError(
                f"{path}, line {number}: expected two tab-separated columns, sequence and label"
            )
        seq, label = fields[0], fields[1]
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


# -- features -------------------------------------------------------------------------------
# The embeddings are `genos_cli.inference.embed.embed`'s: the code of `genos embed`.


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
