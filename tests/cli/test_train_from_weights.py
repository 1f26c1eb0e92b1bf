"""`genos train --init-from` (a new run from a checkpoint's or a Hugging Face directory's
weights), `--resume PATH` (a named checkpoint), and `--tensorboard` (the log's scalars, read
back from the event file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_train import records, train
from tests.helpers import assert_user_error, genos
from tests.tiny import TINY_TRAIN_ARGS, make_checkpoint


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, ecoli_data: Path) -> Path:
    """A tiny run of 4 steps (checkpoints at 2 and 4): the run directory."""
    run = tmp_path_factory.mktemp("pretrained") / "run"
    train("--data-path", ecoli_data, "--max-steps", "4", "--save-interval", "2",
          "--eval-interval", "4", "--output-dir", run)  # fmt: skip
    return run


def _weights(step_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(step_dir / "model.safetensors")


def test_init_from_takes_the_weights_of_a_checkpoint(tmp_path: Path, ecoli_data: Path) -> None:
    source = make_checkpoint(tmp_path / "ckpt", seed=3)  # the tiny model, step 7
    run = tmp_path / "finetune"
    train("--data-path", ecoli_data, "--init-from", source, "--max-steps", "1",
          "--lr", "1e-30", "--set", "training.min_lr=0", "--output-dir", run)  # fmt: skip
    assert [r["step"] for r in records(run)] == [1]  # a new run: step 0 + 1, not 7 + 1
    tuned = _weights(run / "checkpoints" / "step_00000001")
    for name, tensor in _weights(source).items():
        assert (tuned[name] - tensor).abs().max() < 1e-6, name
    meta = json.loads((run / "checkpoints/step_00000001/genos.json").read_text())
    assert meta["init_from"] == {"kind": "genos", "path": str(source.resolve()), "step": 7}


@pytest.mark.slow
def test_init_from_a_trained_run_starts_trained(
    tmp_path: Path, ecoli_data: Path, pretrained: Path
) -> None:
    source = pretrained / "checkpoints" / "step_00000004"
    run = tmp_path / "finetune"
    # A learning rate too small to move a weight: the new run's step 1 holds the source's.
    train("--data-path", ecoli_data, "--init-from", pretrained, "--max-steps", "1",
          "--lr", "1e-30", "--set", "training.min_lr=0", "--output-dir", run)  # fmt: skip
    logged = records(run)
    assert [r["step"] for r in logged] == [1]  # step 0 again, not the source's 4
    first_source = records(pretrained)[0]["loss"]
    assert logged[0]["loss"] < first_source - 0.1  # it starts trained
    tuned = _weights(run / "checkpoints" / "step_00000001")
    for name, tensor in _weights(source).items():
        assert (tuned[name] - tensor).abs().max() < 1e-6, name
    meta = json.loads((run / "checkpoints/step_00000001/genos.json").read_text())
    assert meta["init_from"] == {"kind": "genos", "path": str(source.resolve()), "step": 4}
    plan = json.loads((run / "run_plan.json").read_text())
    assert plan["init_from"]["path"] == str(source.resolve()) and not plan["resume"]


def test_init_from_refuses_what_does_not_fit(tmp_path: Path, ecoli_data: Path) -> None:
    out = tmp_path / "x"
    common = [*TINY_TRAIN_ARGS, "--data-path", ecoli_data, "--output-dir", out]
    tiny = make_checkpoint(tmp_path / "tiny")
    err = assert_user_error(
        genos("train", *common, "--init-from", tiny, "--set", "model.hidden_size=128",
              "--set", "model.num_layers=3"),
        "hidden_size 64 (checkpoint) vs 128 (this run)", "num_layers 2 (checkpoint) vs 3",
    )  # fmt: skip
    assert "\n" not in err.strip()  # one sentence naming each field
    assert_user_error(genos("train", *common, "--init-from", tmp_path / "none"), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_user_error(
        genos("train", *common, "--init-from", tmp_path / "empty"), "holds no genos checkpoint"
    )
    nucleotide = make_checkpoint(tmp_path / "nuc", nucleotide=True)
    # The nucleotide checkpoint's model with this run's BPE tokenizer: the tokenizers differ.
    assert_user_error(
        genos("train", *common, "--init-from", nucleotide),
        "another tokenizer",
    )
    assert_user_error(genos("train", *common, "--init-from", pretrained, "--resume"), "not both")
    assert_user_error(
        genos("train", *common, "--resume", nucleotide), "model only, no training state"
    )
    assert not out.exists()


@pytest.mark.slow
def test_resume_a_named_checkpoint(tmp_path: Path, ecoli_data: Path, pretrained: Path) -> None:
    """--resume PATH continues that checkpoint (step 2 of a run that went on to 4): the same
    steps 3 and 4 again, bit for bit; --resume alone still takes the latest."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(pretrained, run)
    train("--data-path", ecoli_data, "--max-steps", "4", "--save-interval", "2",
          "--eval-interval", "4", "--output-dir", run,
          "--resume", run / "checkpoints" / "step_00000002")  # fmt: skip
    straight = [(r["step"], r["loss"]) for r in records(pretrained)]
    again = [(r["step"], r["loss"]) for r in records(run)][len(straight) :]
    assert again == straight[2:]
    result = genos("train", *TINY_TRAIN_ARGS, "--data-path", ecoli_data, "--max-steps", "6",
                   "--save-interval", "2", "--output-dir", run, "--resume")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["step"] for r in records(run)][-2:] == [5, 6]  # from the latest, step 4


@pytest.mark.slow
def test_init_from_a_hugging_face_export(
    tmp_path: Path, ecoli_data: Path, pretrained: Path
) -> None:
    pytest.importorskip("transformers")
    hf = tmp_path / "hf"
    result = genos("export", "hf", pretrained, hf)
    assert result.exit_code == 0, result.output
    run = tmp_path / "from_hf"
    train("--data-path", ecoli_data, "--init-from", hf, "--max-steps", "1", "--lr", "1e-30",
          "--set", "training.min_lr=0", "--output-dir", run)  # fmt: skip
    source = _weights(pretrained / "checkpoints" / "step_00000004")
    tuned = _weights(run / "checkpoints" / "step_00000001")
    for name, tensor in source.items():
        assert (tuned[name] - tensor).abs().max() < 1e-6, name
    meta = json.loads((run / "checkpoints/step_00000001/genos.json").read_text())
    assert meta["init_from"]["kind"] == "hf"


def test_tensorboard_holds_the_logs_scalars(tmp_path: Path, ecoli_data: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train("--data-path", ecoli_data, "--max-steps", "3", "--eval-interval", "3",
          "--tensorboard", "--output-dir", run)  # fmt: skip
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])

    def series(tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events.Scalars(tag)]

    logged = records(run)
    for field in ("loss", "lm_loss", "aux_loss", "lr", "grad_norm", "tokens_per_s", "mfu",
                  "mem_peak_mb"):  # fmt: skip
        assert f"train/{field}" in tags, field
        assert series(f"train/{field}") == [
            (r["step"], pytest.approx(r[field], rel=1e-6)) for r in logged
        ], field
    (evaluation,) = records(run, "eval")
    assert series("eval/val_bits_per_base") == [
        (3, pytest.approx(evaluation["val_bits_per_base"], rel=1e-6))
    ]
    assert {"expert_balance/layer_0", "expert_balance/layer_1"} <= tags
    balance = max(logged[-1]["expert_load"][0]) * 4  # max/mean of 4 experts' shares
    assert series("expert_balance/layer_0")[-1][1] == pytest.approx(balance, rel=1e-6)
