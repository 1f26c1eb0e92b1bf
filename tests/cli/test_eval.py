"""`genos eval` and `genos eval probe` end to end on a checkpoint trained here on real data,
the real Oct4-vs-MafK task, and the errors a user gets for bad input."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import assert_user_error, genos
from tests.tiny import TINY_TRAIN_ARGS

TASK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tasks" / "oct4_vs_mafk"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, ecoli_data: Path) -> dict[str, Path]:
    """A tiny model trained 20 steps on E. coli (val split 5%)."""
    data = ecoli_data
    run = tmp_path_factory.mktemp("eval") / "run"
    result = genos("train", *TINY_TRAIN_ARGS, "--data-path", data, "--max-steps", "20",
                   "--output-dir", run, "--eval-interval", "100")  # fmt: skip
    assert result.exit_code == 0, result.output
    return {"data": data, "run": run}


@pytest.fixture(scope="module")
def saureus_slice(tmp_path_factory: pytest.TempPathFactory, genomes_dir: Path) -> Path:
    """The first 60 kbp of S. aureus, a genome the model never saw, as FASTA."""
    with gzip.open(genomes_dir / "saureus_nctc8325.fasta.gz", "rt") as fh:
        lines = [line.strip() for line in fh if not line.startswith(">")]
    seq = "".join(lines)[:60_000]
    path = tmp_path_factory.mktemp("fasta") / "saureus.fa"
    path.write_text(">slice\n" + "\n".join(seq[i : i + 70] for i in range(0, len(seq), 70)) + "\n")
    return path


def _eval_json(*args: str | Path) -> dict:
    result = genos("eval", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def on_val(trained: dict[str, Path]) -> dict:
    """`genos eval --json` of the trained model on its data set's validation split."""
    return _eval_json(trained["run"], "--data", trained["data"])


def test_eval_on_the_validation_split_with_baselines(
    trained: dict[str, Path], on_val: dict
) -> None:
    r = on_val
    assert r["step"] == 20 and r["checkpoint"].endswith("step_00000020")
    names = [b["name"] for b in r["baselines"]]
    assert names == ["order-10 Markov", "uniform"]
    markov, uniform = r["baselines"]
    assert uniform["bits_per_base"] == 2.0
    # Fitted on the training split the checkpoint records, never on what it scores.
    assert markov["fitted_on"] == [str(Path(f"{trained['data']}_train_text_document").resolve())]
    assert 1.85 < markov["bits_per_base"] < 1.98  # E. coli is nearly incompressible
    assert 1.5 < r["bits_per_base"] < 2.5 and r["perplexity"] > 1
    manifest = json.loads(Path(f"{trained['data']}.json").read_text())
    val_bp = manifest["outputs"]["val"]["bp"]
    assert val_bp - 20 < r["bases"] < val_bp  # all but the first token's bases
    assert r["windows"] >= r["tokens"] / r["context"]
    for layer in r["expert_usage"]:
        assert sum(layer["shares"]) == pytest.approx(1.0)
        assert 0 < layer["entropy_bits"] <= 2.0 and layer["max_over_mean"] >= 1.0
    assert r["tokens_per_s"] > 0
    # The val prefix itself names the same data: the same numbers.
    direct = _eval_json(
        trained["run"], "--data", f"{trained['data']}_val_text_document", "--no-markov"
    )
    assert direct["bits_per_base"] == pytest.approx(r["bits_per_base"], rel=1e-9)
    assert direct["bases"] == r["bases"] and direct["baselines"][0]["name"] == "uniform"
    # Without --data: the validation split of the run's own data, as the checkpoint records.
    own = _eval_json(trained["run"], "--no-markov")
    assert own["bits_per_base"] == pytest.approx(r["bits_per_base"], rel=1e-9)
    assert own["data"] == [str(Path(f"{trained['data']}_val_text_document").resolve())]


@pytest.mark.slow  # the library-level check (tests/eval) runs in the fast loop
def test_both_strands_scores_documents_and_their_reverse_complements(
    trained: dict[str, Path], on_val: dict, saureus_slice: Path
) -> None:
    forward = on_val
    both = _eval_json(trained["run"], "--data", trained["data"], "--both-strands")
    assert (forward["strands"], both["strands"]) == ("forward", "both")
    fwd, rc = both["per_strand"]["forward"], both["per_strand"]["reverse_complement"]
    assert fwd["bits_per_base"] == pytest.approx(forward["bits_per_base"], rel=1e-9)
    assert fwd["bases"] == forward["bases"]
    # The same molecule: the same bases on both strands, but for the first token of the
    # stream, which nobody scores (another token, of other bases, on the other strand).
    assert abs(rc["bases"] - fwd["bases"]) <= 16 and rc["bits_per_base"] != fwd["bits_per_base"]
    assert both["bases"] == fwd["bases"] + rc["bases"]
    bits = fwd["bits_per_base"] * fwd["bases"] + rc["bits_per_base"] * rc["bases"]
    assert both["bits_per_base"] == pytest.approx(bits / both["bases"], rel=1e-9)
    # The Markov baseline is scored the same way, on the same bases of each strand.
    markov, markov_forward = both["baselines"][0], forward["baselines"][0]
    strands = markov["per_strand"]
    assert strands["forward"] == pytest.approx(markov_forward["bits_per_base"], rel=1e-9)
    assert 1.85 < strands["reverse_complement"] < 1.98
    markov_bits = strands["forward"] * fwd["bases"] + strands["reverse_complement"] * rc["bases"]
    assert markov["bits_per_base"] == pytest.approx(markov_bits / both["bases"], rel=1e-9)
    result = genos("eval", trained["run"], "--data", saureus_slice, "--both-strands", "--no-markov")
    assert result.exit_code == 0, result.output
    assert "both strands" in result.stdout and "reverse complement:" in result.stdout


def test_quality_gap_adds_up_to_what_eval_reports(trained: dict[str, Path], on_val: dict) -> None:
    """benchmarks/quality_gap.py splits `genos eval`'s gap to the Markov model by context
    count and by document; every split adds up to eval's own figures."""
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "quality_gap.py"
    spec = importlib.util.spec_from_file_location("quality_gap", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    r = module.analyse(trained["run"], top=1000)
    markov = on_val["baselines"][0]["bits_per_base"]
    assert r["bases"] == on_val["bases"]
    assert r["genos"] == pytest.approx(on_val["bits_per_base"], rel=1e-5)
    assert r["markov"] == pytest.approx(markov, rel=1e-9)
    assert r["gap"] == pytest.approx(r["genos"] - r["markov"], abs=1e-9)
    for parts in (r["by_context_count"], r["top_documents"]):
        assert sum(p["share"] for p in parts) == pytest.approx(1.0)
        assert sum(p["gap"] for p in parts) == pytest.approx(r["gap"], abs=1e-9)
    assert r["gap_in_top_documents"] == pytest.approx(r["gap"], abs=1e-9)
    assert "bits/base against order-10 Markov" in module.render(r)
    assert module.main([str(trained["run"].parent / "no-such-run")]) == 1  # one sentence


def test_eval_on_fasta_renders_the_table(trained: dict[str, Path], saureus_slice: Path) -> None:
    result = genos("eval", trained["run"], "--data", saureus_slice, "--stride", "64")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    for text in ("bits/base", "genos", "order-10 Markov", "uniform", "expert usage",
                 "tokens/s", "stride 64"):  # fmt: skip
        assert text in out, out
    r = _eval_json(trained["run"], "--data", saureus_slice, "--markov-order", "4")
    assert 58_000 < r["bases"] < 60_000  # whole 512-bp windows, as preprocess cuts them
    assert r["baselines"][0]["name"] == "order-4 Markov"


@pytest.mark.slow  # embeds ~8000 sequences
def test_probe_on_the_oct4_mafk_task(trained: dict[str, Path]) -> None:
    result = genos(
        "eval", "probe", trained["run"],
        "--train", TASK / "class_a_train.fa", "--train", TASK / "class_b_train.fa",
        "--test", TASK / "class_a_test.fa", "--test", TASK / "class_b_test.fa",
        "--class-names", "oct4,mafk", "--kmer", "4", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["classes"] == ["oct4", "mafk"]
    assert r["sequences"] == {"train": [3897, 3900], "test": [100, 100]}
    genos_probe, kmers = r["results"]
    assert genos_probe["features"] == 64 and kmers["features"] == 256
    assert kmers["accuracy"] > 0.75  # the task carries real signal
    assert genos_probe["accuracy"] > 0.6  # so do the embeddings of a barely trained model
    for s in (genos_probe, kmers):
        assert -1 <= s["mcc"] <= 1 and 0 <= s["macro_f1"] <= 1


def test_bad_input(trained: dict[str, Path], tmp_path: Path, saureus_slice: Path) -> None:
    run, data = trained["run"], trained["data"]
    assert_user_error(genos("eval", tmp_path / "nope", "--data", data), "does not exist")
    assert_user_error(genos("eval", tmp_path, "--data", data), "holds no genos checkpoint")
    broken = tmp_path / "broken"
    shutil.copytree(run / "checkpoints" / "step_00000020", broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    assert_user_error(genos("eval", broken, "--data", data), "corrupt")
    nucleotide = tmp_path / "nuc"
    made = genos("preprocess", saureus_slice, "-o", nucleotide, "--nucleotide-tokenizer",
                 "--val-ratio", "0")  # fmt: skip
    assert made.exit_code == 0, made.output
    assert_user_error(genos("eval", run, "--data", nucleotide), "nucleotide tokenizer")
    assert_user_error(genos("eval", run, "--data", data, "--stride", "0"), "--stride")
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("ACGTACGT\tup\nACGT\n")
    assert_user_error(genos("eval", "probe", run, "--train-tsv", tsv, "--test-tsv", tsv), "line 2")
    assert_user_error(genos("eval", run, "--data", tmp_path / "held_out.fa"), "does not exist")
    one_class = tmp_path / "one.tsv"
    one_class.write_text("ACGTACGT\tup\nACGTTT\tup\n")
    assert_user_error(
        genos("eval", "probe", run, "--train-tsv", one_class, "--test-tsv", one_class),
        "at least two classes",
    )
    tiny = tmp_path / "tiny.tsv"
    tiny.write_text("ACGTACGT\tup\nACGTTT\tdown\nACGGGT\tdown\n")
    assert_user_error(
        genos("eval", "probe", run, "--train-tsv", tiny, "--test-tsv", tiny),
        "class 'up' has only one training sequence",
    )
    only_n = tmp_path / "n.fa"
    only_n.write_text(">x\nNNNNNNNN\n")
    assert_user_error(
        genos("eval", "probe", run, "--train", only_n, "--train", saureus_slice,
              "--test", saureus_slice, "--test", saureus_slice),
        "no sequence with A/C/G/T",
    )  # fmt: skip
    assert_user_error(
        genos("eval", "probe", run, "--train", saureus_slice, "--test", saureus_slice),
        "at least two classes",
    )
