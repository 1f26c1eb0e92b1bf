"""benchmarks/bench_quality.py, the learning-efficiency table: its rows are valid genos
settings, its table and resumability work, and (slow) it runs end to end with the tiny
model on real genomes, both parts."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from genos_cli.config import load_config, parse_overrides
from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "bench_quality.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_every_row_is_a_valid_genos_run(bench: ModuleType) -> None:
    """Each row's settings, as the --set flags and as the preprocess config file the harness
    writes, validate; a row changes what its name says."""
    names = [r.name for r in bench.ALL_ROWS]
    assert names[0] == "baseline" and names[-2:] == ["combined", "recipe"]
    assert len(set(names)) == len(names)
    for row in bench.ALL_ROWS:
        for tiny in (False, True):
            settings = bench.run_settings(row, tiny)
            flags = bench.set_flags(settings)
            cfg = load_config("small", overrides=parse_overrides(flags[1::2]))
            assert cfg.training.global_batch_size == settings["training.global_batch_size"]
            data = yaml.safe_load(bench.config_yaml(bench.data_settings(settings)))
            assert data.pop("base") == "small"
            assert set(data) <= {"data", "tokenizer", "model"}
    by_name = {r.name: r for r in bench.ALL_ROWS}
    nucleotide = load_config(
        "small", overrides=parse_overrides(bench.set_flags(by_name["nucleotide"].settings)[1::2])
    )
    assert nucleotide.model.vocab_size == 16  # sized from the tokenizer
    for name, parts in (("combined", bench.COMBINED), ("recipe", bench.RECIPE)):
        for part in parts:
            assert by_name[part].settings.items() <= by_name[name].settings.items()
    # The baseline pins the earlier 512-bp documents; the recipe is today's default, auto.
    assert bench.run_settings(by_name["baseline"], False)["data.sequence_length_bp"] == 512
    recipe = load_config("small", overrides=bench.run_settings(by_name["recipe"], False))
    assert recipe.data.sequence_length_bp == load_config("small").data.sequence_length_bp
    assert bench.select_rows("rc,baseline") == [by_name["rc"], by_name["baseline"]]
    with pytest.raises(ValueError, match="unknown row 'lr'; rows: baseline, lr-2e-3"):
        bench.select_rows("baseline,lr")


def test_rows_share_data_only_when_their_data_settings_agree(bench: ModuleType) -> None:
    by_name = {r.name: r for r in bench.ALL_ROWS}

    def data_key(name: str, tiny: bool = False) -> str:
        return bench.key_of(bench.data_settings(bench.run_settings(by_name[name], tiny)))

    assert data_key("baseline") == data_key("lr-2e-3") == data_key("aux-1e-3")
    assert len({data_key(n) for n in ("baseline", "rc", "long-docs", "nucleotide")}) == 4
    assert data_key("long-docs", tiny=True) != data_key("long-docs")  # 'auto' follows the context


def _report(forward: float, both: float, markov: tuple[float, float] | None) -> dict[str, Any]:
    baselines: list[dict[str, Any]] = [{"name": "uniform", "bits_per_base": 2.0}]
    if markov:
        per_strand = {"forward": markov[0], "reverse_complement": 2 * markov[1] - markov[0]}
        baselines.insert(
            0, {"name": "order-10 Markov", "bits_per_base": markov[1], "per_strand": per_strand}
        )
    return {
        "bits_per_base": both,
        "per_strand": {"forward": {"bits_per_base": forward, "bases": 90_000}},
        "baselines": baselines,
    }


def test_results_table(bench: ModuleType) -> None:
    common = {"settings": {}, "tokens": 2_000_000, "seed": 1234, "tiny": False, "steps": 123,
              "train_seconds": 612.0, "eval_seconds": 9.0, "sequence_length_bp": 512,
              "vocab_size": 128}  # fmt: skip
    rows = [
        bench.Result(part="ecoli", row="baseline", **common,
                     **bench.results_from(_report(1.9659, 1.9650, (1.9211, 1.9242)))),
        bench.Result(part="cross", row="baseline", **common,
                     **bench.results_from(_report(2.0512, 2.0500, None))),
    ]  # fmt: skip
    text = bench.markdown_tables(rows)
    assert "| baseline | 2,000,000 | 123 | 10.2 min | 1.9659 | 1.9211 | +0.0448 | 1.9650 " in text
    assert "| 1.9242 | +0.0408 | 512 | 128 |" in text
    assert "### E. coli validation split" in text and "### saureus held out whole" in text
    assert "| 2.0512 | - | - | 2.0500 | - | - |" in text  # no Markov: dashes
    assert "Uniform guessing: 2.0000 bits/base." in text
    # What makes a result the same run: a changed setting, budget or seed is a new run.
    assert rows[0].key == ("ecoli", "baseline", {}, 2_000_000, 1234, False)


@pytest.mark.slow
def test_tiny_campaign_runs_and_resumes(tmp_path: Path, genomes_dir: Path) -> None:
    """Both parts with the tiny model: E. coli (two rows, one augmented) and cross-genome
    on two real genomes (C. diphtheriae to train, S. aureus held out whole); a second
    invocation finds every row in results.json and runs nothing."""
    genomes = tmp_path / "genomes"
    genomes.mkdir()
    for name in ("cdiphtheriae_nctc11397.fna.gz", "saureus_nctc8325.fasta.gz"):
        (genomes / name).symlink_to(genomes_dir / name)
    out = tmp_path / "bq"
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--tokens", "8192", "--out", str(out),
           "--genomes", str(genomes), "--threads", "1"]  # fmt: skip
    first = subprocess.run(
        [*cmd, "--part", "ecoli", "--rows", "baseline,rc"],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    cross = subprocess.run(
        [*cmd, "--part", "cross", "--rows", "baseline"],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    assert cross.returncode == 0, cross.stdout[-3000:] + cross.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["results"]
    assert [(r["part"], r["row"]) for r in results] == [
        ("ecoli", "baseline"), ("ecoli", "rc"), ("cross", "baseline"),
    ]  # fmt: skip
    for r in results:
        assert r["steps"] == 2 and r["vocab_size"] == 128 and r["sequence_length_bp"] == 512
        assert 1.8 < r["markov"] < 2.3 and 1.8 < r["markov_both_strands"] < 2.3
        assert 1.0 < r["bits_per_base"] < 4.0 and 1.0 < r["both_strands"] < 4.0
    ecoli, rc, saureus = results
    assert ecoli["bases"] == rc["bases"]  # augmentation leaves the validation split alone
    assert saureus["bases"] > 2_700_000  # S. aureus, whole
    manifests = sorted((out / "data").glob("*/*.json"))
    assert [json.loads(m.read_text())["reverse_complement"] for m in manifests].count(True) == 1
    cross_inputs = json.loads(next((out / "data").glob("cross-*/cross.json")).read_text())["inputs"]
    assert [Path(p).name for p in cross_inputs] == ["cdiphtheriae_nctc11397.fna.gz"]
    assert "| baseline | 8,192 | 2 |" in first.stdout and "| rc | 8,192 | 2 |" in first.stdout
    again = subprocess.run(
        [*cmd, "--part", "both", "--rows", "baseline"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("[done]") == 2 and "[run ]" not in again.stdout
    # A result counted the earlier way is scored again from its checkpoint, not retrained.
    stale = json.loads((out / "results.json").read_text())
    stale["results"][0].pop("scoring")
    stale["results"][0]["bits_per_base"] = 9.9
    (out / "results.json").write_text(json.dumps(stale))
    rescored = subprocess.run(
        [*cmd, "--part", "ecoli", "--rows", "baseline"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert rescored.returncode == 0, rescored.stdout[-3000:] + rescored.stderr[-3000:]
    assert "[score] ecoli/baseline: counted eod-counted" in rescored.stdout
    assert "[run ]" not in rescored.stdout
    after = json.loads((out / "results.json").read_text())["results"]
    assert len(after) == 3 and after[-1]["scoring"] == "bases-only"
    assert after[-1]["bits_per_base"] == pytest.approx(ecoli["bits_per_base"], abs=0.05)
    assert after[-1]["train_seconds"] == ecoli["train_seconds"]
