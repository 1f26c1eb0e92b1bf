"""`--data-path` resolution (`genos_cli.data.prepared`): a preprocess prefix, a direct
Megatron prefix, a moved data set, missing files named, and the tokenizer and vocabulary
checks, each a one-sentence error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from genos_cli.data.prepared import check_tokenizer_matches, check_vocab_fits, resolve_data
from genos_cli.data.tokenizers import load_tokenizer
from genos_cli.errors import GenosError
from tests.helpers import train_prefix


def test_resolve_a_preprocess_prefix(ecoli_nucleotide_data: Path) -> None:
    for given in (
        ecoli_nucleotide_data,
        f"{ecoli_nucleotide_data}.json",
        str(ecoli_nucleotide_data),
    ):
        spec = resolve_data(given)
        assert spec.train == (train_prefix(ecoli_nucleotide_data),)
        assert spec.val == (Path(f"{ecoli_nucleotide_data}_val_text_document"),)
        assert spec.tokenizer is not None and spec.tokenizer.kind == "nucleotide"
        assert spec.tokenizer.source == str(ecoli_nucleotide_data)
        assert (spec.tokenizer.vocab_size, spec.tokenizer.eod_id) == (16, 3)
        assert spec.manifests == (Path(f"{ecoli_nucleotide_data}.json"),)


def test_resolve_a_direct_prefix(ecoli_nucleotide_data: Path, tmp_path: Path) -> None:
    spec = resolve_data(train_prefix(ecoli_nucleotide_data))
    assert spec.train == (train_prefix(ecoli_nucleotide_data),) and spec.val == ()
    assert spec.tokenizer is not None and spec.tokenizer.kind == "nucleotide"  # from ecoli.json
    spec = resolve_data(
        f"{train_prefix(ecoli_nucleotide_data)}.bin",
        val_path=f"{ecoli_nucleotide_data}_val_text_document",
    )
    assert spec.val == (Path(f"{ecoli_nucleotide_data}_val_text_document"),)
    # Megatron data with no manifest: no tokenizer to check, the ids are scanned instead
    for ext in (".bin", ".idx"):
        shutil.copy(f"{train_prefix(ecoli_nucleotide_data)}{ext}", tmp_path / f"other{ext}")
    spec = resolve_data(tmp_path / "other")
    assert spec.tokenizer is None and spec.manifests == ()
    check_vocab_fits(spec, 16)
    with pytest.raises(GenosError, match="contains token id 10, but the model's vocab_size is 8"):
        check_vocab_fits(spec, 8)


def test_resolve_a_moved_data_set(ecoli_data: Path, tmp_path: Path) -> None:
    """The data set is the files beside the manifest, wherever preprocessing wrote them."""
    for path in ecoli_data.parent.iterdir():
        shutil.copy(path, tmp_path / path.name)
    spec = resolve_data(tmp_path / "ecoli")
    assert spec.train == (tmp_path / "ecoli_train_text_document",)
    assert spec.val == (tmp_path / "ecoli_val_text_document",)


def test_missing_files_are_named(ecoli_nucleotide_data: Path, tmp_path: Path) -> None:
    with pytest.raises(GenosError, match=r"nowhere names no data: expected nowhere\.json"):
        resolve_data("nowhere")
    shutil.copy(f"{train_prefix(ecoli_nucleotide_data)}.bin", tmp_path / "half.bin")
    with pytest.raises(GenosError, match=r"half\.idx does not exist"):
        resolve_data(tmp_path / "half")
    shutil.copy(f"{ecoli_nucleotide_data}.json", tmp_path / "gone.json")
    with pytest.raises(GenosError, match=r"gone_train_text_document\.bin does not exist"):
        resolve_data(tmp_path / "gone")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(GenosError, match="not a genos data manifest"):
        resolve_data(tmp_path / "bad")


def test_tokenizer_mismatch_is_one_sentence(ecoli_nucleotide_data: Path, ecoli_data: Path) -> None:
    spec = resolve_data(ecoli_nucleotide_data)
    check_tokenizer_matches(spec.tokenizer, load_tokenizer("nucleotide"))
    check_tokenizer_matches(None, load_tokenizer("bpe"))  # nothing to compare
    with pytest.raises(GenosError) as err:
        check_tokenizer_matches(spec.tokenizer, load_tokenizer("bpe"))
    message = str(err.value)
    assert message.startswith(
        f"{ecoli_nucleotide_data} was made with the nucleotide tokenizer (fingerprint "
    )
    assert "but this run uses the bpe tokenizer" in message and "\n" not in message
    with pytest.raises(GenosError, match="were made with different tokenizers"):
        resolve_data([ecoli_nucleotide_data, ecoli_data])
    spec = resolve_data(ecoli_data)
    check_vocab_fits(spec, 128)
    with pytest.raises(GenosError, match=r"ids up to 127 .* vocab_size is 100"):
        check_vocab_fits(spec, 100)
