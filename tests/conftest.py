"""Shared fixtures: where the real genomes live (../shared/data beside the checkout), E. coli
preprocessed once a session, a private cache, one torch thread, the tiny model's config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.tiny import tiny_model_config

if TYPE_CHECKING:
    from genos_cli.config.schema import ModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GENOS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
GENOMES = SHARED_DATA / "genomes"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` are skipped where torch sees no CUDA GPU."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What genos caches (the embedded data set, the CPU peak) goes to one directory of this
    session, not ~/.cache: set before any module fixture runs. Tests about caching point
    XDG_CACHE_HOME elsewhere themselves.

    DeepSpeed's JIT-compiled CPU op (deepspeed_shm_comm, needed by every DeepSpeed run on
    CPU) stays where torch keeps it outside tests: it is a build product keyed by the torch
    and DeepSpeed versions, not state a test could leave behind, and compiling it takes
    minutes on two cores, so it is built once a machine, not once a session."""
    with pytest.MonkeyPatch.context() as mp:
        if "TORCH_EXTENSIONS_DIR" not in os.environ:  # torch's default, as it computes it
            user_cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
            mp.setenv("TORCH_EXTENSIONS_DIR", str(Path(user_cache) / "torch_extensions"))
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        # A developer's own GENOS_CACHE_DIR / GENOS_OUTPUT_DIR would override the above.
        mp.delenv("GENOS_CACHE_DIR", raising=False)
        mp.delenv("GENOS_OUTPUT_DIR", raising=False)
        yield


@pytest.fixture(scope="session")
def genomes_dir() -> Path:
    if not GENOMES.is_dir():
        pytest.fail(f"real genomes not found at {GENOMES}; set GENOS_SHARED_DATA")
    return GENOMES


@pytest.fixture(scope="session")
def ecoli_fasta(genomes_dir: Path) -> Path:
    return genomes_dir / "ecoli_k12_mg1655.fasta.gz"


@pytest.fixture(scope="session")
def celegans_fasta(genomes_dir: Path) -> Path:
    """C. elegans chrX: soft-masked? no, but it has runs of N."""
    return genomes_dir / "celegans_chrX.fa.gz"


@pytest.fixture(scope="session")
def real_runs(genomes_dir: Path) -> list[str]:
    """ACGT runs of varied length (1..700 bp) from the start of each of the six genomes."""
    from genos_cli.data.fasta import read_acgt_runs

    runs: list[str] = []
    for path in sorted(genomes_dir.iterdir()):
        for k, run in enumerate(read_acgt_runs([path], max_run_bp=700)):
            runs.append(run[: 1 + (k * 97) % 700].decode())
            if k == 40:
                break
    return runs


@pytest.fixture(scope="session")
def ecoli_documents(ecoli_fasta: Path) -> list[np.ndarray]:
    """Real E. coli sequence cut into documents of varied lengths (1 to 4000 bp), encoded one
    token per base plus eod, as uint16: input for .bin/.idx writers and readers."""
    from genos_cli.data.fasta import read_acgt_runs
    from genos_cli.data.tokenizers import DNANucleotideTokenizer

    tok = DNANucleotideTokenizer()
    genome = b"".join(read_acgt_runs([ecoli_fasta], max_run_bp=1 << 20))[:200_000]
    cuts = np.cumsum([17, 512, 1, 300, 512, 4000, 2, 77] * 20)
    pieces = np.split(np.frombuffer(genome, np.uint8), cuts[cuts < len(genome)])
    return [np.array([*tok.encode(p.tobytes().decode()), tok.eod_id], np.uint16) for p in pieces]


@pytest.fixture(scope="session")
def ecoli_data(tmp_path_factory: pytest.TempPathFactory, ecoli_fasta: Path) -> Path:
    """`genos preprocess` of E. coli with the shipped BPE tokenizer, 512-bp documents (more
    and shorter than the default's, as the tests of packing and windows want) and a 5%
    validation split, made once a session: the `-o` prefix (ecoli.json,
    ecoli_{train,val}_text_document.*), alone in its directory. Tests read it; one that
    changes data copies it first."""
    from tests.helpers import genos

    root = tmp_path_factory.mktemp("ecoli_bpe")
    prefix = root / "data" / "ecoli"
    result = genos("preprocess", ecoli_fasta, "-o", prefix, "--write-text", root / "text",
                   "--workers", "1", "--val-ratio", "0.05", "--seq-length", "512")  # fmt: skip
    assert result.exit_code == 0, result.output
    return prefix


@pytest.fixture(scope="session")
def ecoli_text(ecoli_data: Path) -> Path:
    """The sequences of `ecoli_data` as text (`--write-text`): train.txt and val.txt, one
    sequence a line."""
    return ecoli_data.parent.parent / "text"


@pytest.fixture(scope="session")
def ecoli_nucleotide_data(tmp_path_factory: pytest.TempPathFactory, ecoli_fasta: Path) -> Path:
    """The same with the nucleotide tokenizer (one token per base) and the default split."""
    from tests.helpers import genos

    prefix = tmp_path_factory.mktemp("ecoli_nucleotide") / "ecoli"
    result = genos("preprocess", ecoli_fasta, "-o", prefix, "--nucleotide-tokenizer",
                   "--seq-length", "512")  # fmt: skip
    assert result.exit_code == 0, result.output
    return prefix


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Every test runs torch on one thread, and so do the `genos` processes tests start
    (OMP_NUM_THREADS, which DeepSpeed's launcher keeps). The machine's cores are shared: with
    2 threads each small op waits at a barrier for a thread that may not be scheduled
    (measured 40-90x slower under load: 2.8 s a step of the tiny model instead of 0.03 s),
    and the models in tests are too small to gain from a second thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_config() -> ModelConfig:
    """The tiny model's config (tests/tiny.py); `tiny_model_config(**changes)` for others."""
    return tiny_model_config()
