"""`genos export hf`: transformers loads the directory as Mixtral with genos's logits and
tokenizer ids, and `genos export import-hf` brings back the identical checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genos_cli.checkpoint import load
from genos_cli.data.fasta import read_acgt_runs
from tests.helpers import genos
from tests.tiny import make_checkpoint

pytest.importorskip("transformers")
KINDS = ["bpe", "nucleotide"]


@pytest.fixture(scope="module", params=KINDS)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(genos checkpoint directory, exported HF directory) for each tokenizer."""
    root = tmp_path_factory.mktemp(f"export_{request.param}")
    ckpt = make_checkpoint(root / "ckpt", nucleotide=request.param == "nucleotide")
    result = genos("export", "hf", ckpt, root / "hf")
    assert result.exit_code == 0, result.output
    return ckpt, root / "hf"


@pytest.fixture(scope="module")
def ecoli_windows(ecoli_fasta: Path) -> list[str]:
    """Every 512-bp window of the E. coli genome (9,061 of them)."""
    return [r.decode() for r in read_acgt_runs([ecoli_fasta], max_run_bp=512) if len(r) == 512]


def test_directory_is_what_transformers_writes(exported: tuple[Path, Path]) -> None:
    _, hf = exported
    names = {p.name for p in hf.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "genos.json", "README.md"} <= names  # fmt: skip
    assert not [p for p in hf.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_logits_match_genos(exported: tuple[Path, Path], ecoli_windows: list[str]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, MixtralForCausalLM

    ckpt, hf = exported
    native = load(ckpt)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    assert isinstance(model, MixtralForCausalLM)
    tokenizer = AutoTokenizer.from_pretrained(hf)
    batch = tokenizer(ecoli_windows[100:104], return_tensors="pt", padding=True)
    ids = batch["input_ids"][:, :128]  # the tiny model's context
    with torch.no_grad():
        expected = native.model(ids).logits
        got = model(ids).logits
    assert got.shape == expected.shape == (4, 128, native.config.model.vocab_size)
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.slow  # every E. coli window through the HF tokenizer, twice
def test_tokenizer_ids_match_on_every_ecoli_window(
    exported: tuple[Path, Path], ecoli_windows: list[str]
) -> None:
    from transformers import AutoTokenizer

    ckpt, hf = exported
    native = load(ckpt).tokenizer
    tokenizer = AutoTokenizer.from_pretrained(hf)
    got = tokenizer(ecoli_windows, add_special_tokens=True)["input_ids"]
    mismatches = sum(
        a != native.encode(w) for a, w in zip(got, ecoli_windows, strict=True)
    )  # fmt: skip
    assert len(ecoli_windows) == 9061 and mismatches == 0
    assert tokenizer.decode(got[0], skip_special_tokens=True) == ecoli_windows[0]
    # Unknown and soft-masked characters too: <unk> runs, lowercase, N and IUPAC codes.
    for text in ["NNNNacgtACGT  ACGTN", "acgtRYKMnnACGT", "ACGT ACGT", "", "GATTACA" * 40]:
        assert tokenizer(text)["input_ids"] == native.encode(text), text
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (native.pad_id, native.unk_id)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (native.bos_id, native.eos_id)


def test_import_gives_back_the_same_checkpoint(exported: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, hf = exported
    result = genos("export", "import-hf", hf, tmp_path / "back")
    assert result.exit_code == 0, result.output
    before, after = load(ckpt), load(tmp_path / "back")
    a, b = before.model.state_dict(), after.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert after.config == before.config
    assert after.tokenizer.fingerprint() == before.tokenizer.fingerprint()
    assert after.step == before.step == 7
    # And the imported checkpoint exports again to the same weights file.
    again = genos("export", "hf", tmp_path / "back", tmp_path / "hf2")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "hf2/model.safetensors").read_bytes() == (
        hf / "model.safetensors"
    ).read_bytes()


def test_import_a_mixtral_from_elsewhere(tmp_path: Path) -> None:
    """A Mixtral directory transformers wrote (no genos.json), given its tokenizer."""
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(
        vocab_size=32, hidden_size=32, intermediate_size=40, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(1)
    source = MixtralForCausalLM(config).eval()
    source.save_pretrained(tmp_path / "hf")
    result = genos("export", "import-hf", tmp_path / "hf", tmp_path / "ckpt")
    assert result.exit_code == 1 and "--nucleotide-tokenizer" in result.stderr
    result = genos(
        "export", "import-hf", tmp_path / "hf", tmp_path / "ckpt", "--nucleotide-tokenizer"
    )
    assert result.exit_code == 0, result.output
    imported = load(tmp_path / "ckpt")
    assert imported.config.model.num_experts == 4 and imported.tokenizer.kind == "nucleotide"
    ids = torch.randint(0, 32, (2, 40))
    with torch.no_grad():
        diff = (imported.model(ids).logits - source(ids).logits).abs().max().item()
    assert diff < 1e-5
