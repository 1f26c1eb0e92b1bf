"""`genos train` end to end on CPU with real data: logs, checkpoints, resume, two processes
through DeepSpeed's launcher, and the errors a user gets before any work starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import assert_user_error, genos
from tests.tiny import TINY_TRAIN_ARGS


def records(run: Path, kind: str = "train") -> list[dict]:
    lines = (run / "training_log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def train(*args: str | Path) -> None:
    result = genos("train", *TINY_TRAIN_ARGS, *args)
    assert result.exit_code == 0, result.output


def test_few_steps_log_checkpoint_and_falling_loss(tmp_path: Path, ecoli_data: Path) -> None:
    run = tmp_path / "run"
    train("--data-path", ecoli_data, "--max-steps", "12", "--output-dir", run,
          "--eval-interval", "6", "--save-interval", "6")  # fmt: skip
    logged = records(run)
    assert [r["step"] for r in logged] == list(range(1, 13))
    first, last = logged[0], logged[-1]
    assert last["loss"] < first["loss"] - 0.3  # it learns
    for key in ("tokens", "lm_loss", "aux_loss", "lr", "grad_norm", "tokens_per_s", "mfu",
                "samples_per_s", "mem_peak_mb", "expert_load"):  # fmt: skip
        assert key in last
    assert len(last["expert_load"]) == 2 and abs(sum(last["expert_load"][0]) - 1) < 1e-6
    assert last["tokens"] == 12 * 8 * 128
    evals = records(run, "eval")
    assert [e["step"] for e in evals] == [6, 12]
    assert 0 < evals[-1]["val_bits_per_base"] < evals[0]["val_bits_per_base"]

    ckpts = run / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text())["tag"] == "step_00000012"
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_00000006", "step_00000012"]
    # The consolidated model loads into a fresh genos model with its config.
    from safetensors.torch import load_file

    from genos_cli.config import load_config
    from genos_cli.model import GenosForCausalLM

    cfg = load_config(path=ckpts / "step_00000012" / "config.yaml")
    model = GenosForCausalLM(cfg.model)
    model.load_state_dict(load_file(ckpts / "step_00000012" / "model.safetensors"))
    meta = json.loads((ckpts / "step_00000012" / "genos.json").read_text())
    assert meta["step"] == 12 and meta["tokenizer"]["kind"] == "bpe"


def test_resume_continues_exactly(tmp_path: Path, ecoli_data: Path) -> None:
    common = ["--data-path", ecoli_data, "--max-steps", "6", "--save-interval", "3",
              "--eval-interval", "3"]  # fmt: skip
    train(*common, "--output-dir", tmp_path / "straight")
    train(*common, "--output-dir", tmp_path / "stopped", "--stop-after", "3")
    assert [r["step"] for r in records(tmp_path / "stopped")] == [1, 2, 3]
    train(*common, "--output-dir", tmp_path / "stopped", "--resume")
    straight = [(r["step"], r["loss"]) for r in records(tmp_path / "straight")]
    resumed = [(r["step"], r["loss"]) for r in records(tmp_path / "stopped")]
    assert resumed == straight  # bit-identical on the same machine
    evals = [e["val_loss"] for e in records(tmp_path / "stopped", "eval")]
    assert evals == [e["val_loss"] for e in records(tmp_path / "straight", "eval")]


@pytest.mark.slow
@pytest.mark.multiproc
def test_two_processes_zero2_expert_parallel_match_one(tmp_path: Path, ecoli_data: Path) -> None:
    """DeepSpeed's launcher, 2 CPU ranks, ZeRO-2, experts sharded 2 ways: the same losses as
    one process with the same global batch (gradient accumulation instead of ranks)."""
    common = ["--data-path", ecoli_data, "--max-steps", "4", "--zero-stage", "2",
              "--eval-interval", "4", "--save-interval", "4"]  # fmt: skip
    train(*common, "--output-dir", tmp_path / "one")
    train(*common, "--output-dir", tmp_path / "two", "--num-gpus", "2",
          "--expert-parallel-size", "2")  # fmt: skip
    one, two = records(tmp_path / "one"), records(tmp_path / "two")
    assert two[0]["world_size"] == 2
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    e1, e2 = records(tmp_path / "one", "eval"), records(tmp_path / "two", "eval")
    assert e2[0]["val_loss"] == pytest.approx(e1[0]["val_loss"], rel=1e-5)
    # Experts were sharded, yet the consolidated checkpoint holds the whole model.
    from safetensors.torch import load_file

    full = load_file(tmp_path / "two/checkpoints/step_00000004/model.safetensors")
    assert full["blocks.0.moe.w_gate_up"].shape[0] == 4


def test_dry_run_prints_and_touches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    result = genos("train", "--size", "small", "--dry-run", "--output-dir", out,
                   "--num-gpus", "2", "--zero-stage", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "num_layers: 4" in result.stdout
    assert '"stage": 2' in result.stdout
    assert "deepspeed.launcher.runner" in result.stdout and "--num_gpus 2" in result.stdout
    assert "steps: 611" in result.stdout  # 160M tokens / (512 x 512)
    assert not out.exists()
    assert not (tmp_path / "cache" / "genos" / "data").exists()  # embedded data not prepared


def test_smoke_test_on_embedded_default(tmp_path: Path) -> None:
    """`--test` with no data: prepares the embedded E. coli genome, runs 4 quick steps of one
    micro-batch with a log line each, an evaluation and a checkpoint."""
    run = tmp_path / "smoke"
    train("--test", "--output-dir", run)
    logged = records(run)
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    # One micro-batch per step: the tiny options' --micro-batch-size 4 is kept (without it,
    # 2), and the global batch follows it.
    assert logged[-1]["tokens"] == 4 * 4 * 128
    assert logged[-1]["loss"] < logged[0]["loss"]  # the optimizer stepped
    assert (run / "checkpoints/step_00000004/model.safetensors").is_file()
    assert records(run, "eval")[-1]["step"] == 4
    plan = json.loads((run / "run_plan.json").read_text())
    assert plan["smoke_test"] and plan["eval_iters"] == 2 and plan["compile"] is False


def test_bad_options_fail_before_work(tmp_path: Path, ecoli_data: Path, genomes_dir: Path) -> None:
    out = tmp_path / "x"
    assert_user_error(genos("train", "--size", "huge", "--output-dir", out), "huge")
    assert_user_error(
        genos("train", "--global-batch-size", "10", "--micro-batch-size", "4",
              "--output-dir", out, "--data-path", ecoli_data),
        "global_batch_size (10) must be a multiple of micro_batch_size (4)",
    )  # fmt: skip
    assert_user_error(
        genos("train", "--data-path", tmp_path / "nowhere", "--output-dir", out), "nowhere"
    )
    assert_user_error(
        genos("train", "--zero-stage", "3", "--data-path", ecoli_data, "--output-dir", out),
        "ZeRO-3 does not support Mixture-of-Experts",
    )
    assert_user_error(
        genos("train", *TINY_TRAIN_ARGS, "--data-path", ecoli_data, "--nucleotide-tokenizer",
              "--output-dir", out),
        "tokenizer",
    )  # fmt: skip
    assert_user_error(
        genos("train", *TINY_TRAIN_ARGS, "--data-path", ecoli_data, "--resume",
              "--output-dir", out),
        "no complete checkpoint",
    )  # fmt: skip
    assert_user_error(
        genos("train", *TINY_TRAIN_ARGS, "--data-path", ecoli_data, "--num-gpus", "2",
              "--expert-parallel-size", "4", "--global-batch-size", "8", "--output-dir", out),
        "must divide",
    )  # fmt: skip
    assert not out.exists()


def test_existing_run_is_not_overwritten(tmp_path: Path, ecoli_data: Path) -> None:
    run = tmp_path / "run"
    train("--data-path", ecoli_data, "--max-steps", "1", "--output-dir", run)
    before = (run / "checkpoints/step_00000001/model.safetensors").read_bytes()
    assert_user_error(
        genos("train", *TINY_TRAIN_ARGS, "--data-path", ecoli_data, "--max-steps", "1",
              "--output-dir", run),
        "already holds a run",
    )  # fmt: skip
    assert (run / "checkpoints/step_00000001/model.safetensors").read_bytes() == before
