"""`genos embed` and the embedding code `genos eval probe` shares: pooling, per-token states,
N splitting, layers, the .npy and Parquet outputs, and errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genos_cli.checkpoint import load
from genos_cli.data.tokenizers import load_tokenizer
from genos_cli.inference.embed import embed
from genos_cli.model import build_model
from tests.helpers import assert_user_error, genos
from tests.tiny import tiny_model_config


def test_pooled_is_the_mean_of_the_token_states(
    tiny_checkpoints: dict[str, Path], ecoli_sequence: str
) -> None:
    ckpt = load(tiny_checkpoints["bpe"])
    model, tok = ckpt.model, ckpt.tokenizer
    a, b = ecoli_sequence[:200].encode(), ecoli_sequence[10_000:10_900].encode()  # b > context
    out = embed(model, tok, [a, b + b"NNNN" + a, b""], per_token=True, batch_size=2)
    assert out.per_token is not None and out.token_ids is not None
    for i in (0, 1):
        np.testing.assert_allclose(out.per_token[i].mean(axis=0), out.pooled[i], atol=1e-5)
        assert out.per_token[i].shape[0] == out.tokens[i] == out.token_ids[i].size
    # N splits a sequence into runs, each read after its own end-of-document id.
    parts = embed(model, tok, [b, a], per_token=True)
    np.testing.assert_allclose(out.per_token[1], np.concatenate(parts.per_token), atol=1e-5)
    assert out.token_ids[1].tolist() == tok.encode(b.decode()) + tok.encode(a.decode())
    assert out.tokens[2] == 0 and np.isnan(out.pooled[2]).all()
    # Layer 0 is the token embedding table itself.
    zero = embed(model, tok, [a], layer=0, per_token=True)
    table = model.embed.weight.detach().numpy()
    np.testing.assert_array_equal(zero.per_token[0], table[zero.token_ids[0]])


def test_right_padding_is_invisible_and_long_sequences_pool_every_piece(
    ecoli_sequence: str,
) -> None:
    tok = load_tokenizer("bpe")
    torch.manual_seed(0)
    model = build_model(tiny_model_config(vocab_size=tok.vocab_size, max_seq_length=32),
                        compile=False).eval()  # fmt: skip
    short, longer = ecoli_sequence[:40].encode(), ecoli_sequence[500:800].encode()  # > context
    alone = embed(model, tok, [short], batch_size=1).pooled
    batched = embed(model, tok, [short, longer, short], batch_size=3).pooled
    np.testing.assert_allclose(batched[0], alone[0], atol=1e-5)  # right padding is invisible
    np.testing.assert_allclose(batched[2], alone[0], atol=1e-5)
    # A long sequence is pooled over all its pieces: not just its first context's worth.
    first_piece = tok.decode(tok.encode(longer.decode())[:31]).encode()
    head = embed(model, tok, [first_piece]).pooled
    assert np.abs(batched[1] - head[0]).max() > 1e-3


@pytest.mark.slow
def test_cli_numpy_parquet_and_tsv(tiny_checkpoints: dict[str, Path], ecoli_sequence: str,
                                   tmp_path: Path) -> None:  # fmt: skip
    pq = pytest.importorskip("pyarrow.parquet")
    ckpt = tiny_checkpoints["nucleotide"]
    fasta = tmp_path / "seqs.fa"
    fasta.write_text(f">first x\n{ecoli_sequence[:150]}\n>second\n{ecoli_sequence[7000:7040]}\n")
    out = tmp_path / "emb.npy"
    result = genos("embed", ckpt, "--fasta", fasta, "-o", out, "--per-token", "--layer", "1")
    assert result.exit_code == 0, result.output
    pooled = np.load(out)
    assert pooled.shape == (2, 64) and pooled.dtype == np.float32
    assert (tmp_path / "emb.ids.txt").read_text() == "first\nsecond\n"
    offsets = np.load(tmp_path / "emb.offsets.npy")
    tokens = np.load(tmp_path / "emb.tokens.npy")
    assert offsets.tolist() == [0, 150, 190] and tokens.shape == (190, 64)
    np.testing.assert_allclose(tokens[150:].mean(axis=0), pooled[1], atol=1e-5)
    assert np.load(tmp_path / "emb.token_ids.npy").shape == (190,)
    table = tmp_path / "emb.parquet"
    result = genos("embed", ckpt, "--fasta", fasta, "-o", table, "--layer", "1")
    assert result.exit_code == 0, result.output
    t = pq.read_table(table)
    assert t.column("id").to_pylist() == ["first", "second"]
    assert t.column("length").to_pylist() == [150, 40]
    np.testing.assert_allclose(np.stack(t.column("embedding").to_pylist()), pooled, atol=1e-6)
    tsv = tmp_path / "seqs.tsv"
    tsv.write_text(f"label\tsequence\tid\nup\t{ecoli_sequence[:150]}\ts1\n"
                   f"down\t{ecoli_sequence[7000:7040]}\ts2\n")  # fmt: skip
    via_tsv = tmp_path / "tsv.npy"
    result = genos("embed", ckpt, "--tsv", tsv, "-o", via_tsv, "--layer", "1")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(via_tsv), pooled, atol=1e-6)
    assert (tmp_path / "tsv.ids.txt").read_text() == "s1\ns2\n"
    bare = tmp_path / "bare.tsv"
    bare.write_text(f"{ecoli_sequence[:150]}\tup\n")
    result = genos("embed", ckpt, "--tsv", bare, "-o", tmp_path / "bare.npy")
    assert result.exit_code == 0 and (tmp_path / "bare.ids.txt").read_text() == "row1\n"


@pytest.mark.slow
def test_bad_input(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = tiny_checkpoints["bpe"]
    fasta = tmp_path / "ok.fa"
    fasta.write_text(">a\nACGTACGT\n")
    out = tmp_path / "out.npy"
    assert_user_error(genos("embed", ckpt, "--fasta", fasta, "-o", tmp_path / "x.csv"), ".npy")
    assert_user_error(genos("embed", ckpt, "-o", out), "--fasta FILE or --tsv FILE")
    assert_user_error(genos("embed", ckpt, "--fasta", tmp_path / "no.fa", "-o", out),
                      "does not exist")  # fmt: skip
    assert_user_error(genos("embed", ckpt, "--fasta", fasta, "-o", out, "--layer", "3"),
                      "--layer must be in [0, 2]")  # fmt: skip
    bad = tmp_path / "bad.tsv"
    bad.write_text("ACGT\nAC?GT\n")
    assert_user_error(genos("embed", ckpt, "--tsv", bad, "-o", out), "line 2", "'?'")
    assert_user_error(genos("embed", tmp_path / "none", "--fasta", fasta, "-o", out),
                      "does not exist")  # fmt: skip
    assert not list(tmp_path.glob("*.npy")) and not list(tmp_path.glob(".out*"))


def test_parquet_without_pyarrow_says_how_to_install(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` fails as if absent
    fasta = tmp_path / "ok.fa"
    fasta.write_text(">a\nACGTACGT\n")
    out = tmp_path / "emb.parquet"
    result = genos("embed", tiny_checkpoints["bpe"], "--fasta", fasta, "-o", out)
    assert_user_error(result, "needs the pyarrow package", "pip install 'genos[parquet]'")
    assert not out.exists()
