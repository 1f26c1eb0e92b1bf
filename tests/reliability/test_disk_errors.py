"""A full disk, an unwritable or mistyped output path: one `error:` line saying what and
where, before the work where it can be known, and never a damaged earlier checkpoint."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from genos_cli.checkpoint import latest
from genos_cli.checkpoint import load as load_checkpoint
from tests.helpers import assert_user_error, genos
from tests.reliability.conftest import (
    assert_train_error,
    files_under,
    latest_tag,
    log_records,
    read_only,
    resize,
    small_filesystem,
)
from tests.tiny import TINY_TRAIN_ARGS


def _fill_disk_at_second_save(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root (no tmpfs to fill): DeepSpeed's save of the second checkpoint writes part
    of a file and fails as a full disk does."""
    from genos_cli.train.runtime import Runtime

    save, calls = Runtime.save_shards, []

    def save_until_full(runtime, directory, tag, client_state):  # type: ignore[no-untyped-def]
        calls.append(tag)
        if len(calls) < 2:
            return save(runtime, directory, tag, client_state)
        (directory / tag).mkdir(parents=True, exist_ok=True)
        (directory / tag / "mp_rank_00_model_states.pt").write_bytes(bytes(4096))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Runtime, "save_shards", save_until_full)


def test_disk_full_at_a_save_then_read_only_then_resume(
    tmp_path: Path, ecoli_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    # One tiny checkpoint is 2.8 MB: 4 MB hold the first save, not the second.
    with small_filesystem(tmp_path / "disk", "4m") as disk:
        if disk is None:
            _fill_disk_at_second_save(monkeypatch)
        checkpoints = (disk or tmp_path) / "ck"
        args = [*TINY_TRAIN_ARGS, "--data-path", ecoli_data, "--max-steps", "4",
                "--save-interval", "2", "--eval-interval", "4", "--output-dir", run,
                "--checkpoint-dir", checkpoints]  # fmt: skip
        assert_train_error(
            genos("train", *args),
            "could not save checkpoint step_00000004",
            "no space left on device",
            "step_00000002, is intact",
        )
        # The earlier checkpoint is still the latest and whole; the failed one left nothing.
        assert latest_tag(checkpoints) == "step_00000002"
        assert load_checkpoint(checkpoints).step == 2
        assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]
        monkeypatch.undo()

        # A read-only checkpoint directory stops --resume before any training.
        steps_logged = len(log_records(run))
        with read_only(checkpoints) as applied:
            if applied:  # (not as root without chattr)
                assert_train_error(
                    genos("train", *args, "--resume"), "checkpoint directory", str(checkpoints)
                )
        assert len(log_records(run)) == steps_logged
        assert latest_tag(checkpoints) == "step_00000002"

        # With room again, the run continues from step 2 to the end.
        if disk is not None:
            resize(disk, "16m")
        assert genos("train", *args, "--resume").exit_code == 0
        assert latest(checkpoints) == checkpoints / "step_00000004"
        assert [r["step"] for r in log_records(run)][-2:] == [3, 4]


def test_train_output_under_a_file_fails_before_training(tmp_path: Path, ecoli_data: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    for flag in ("--output-dir", "--checkpoint-dir"):
        target = blocker / "run"
        extra = [] if flag == "--output-dir" else ["--output-dir", tmp_path / "ok"]
        result = genos("train", *TINY_TRAIN_ARGS, "--data-path", ecoli_data, "--max-steps", "1",
                       flag, target, *extra)  # fmt: skip
        assert_train_error(result, "cannot create the", str(target), "not a directory")
    assert not (tmp_path / "ok" / "training_log.jsonl").exists()


def test_preprocess_unwritable_or_full_output(tmp_path: Path, ecoli_fasta: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert_user_error(
        genos("preprocess", ecoli_fasta, "-o", blocker / "sub" / "x"), "a_file is a file"
    )
    out = tmp_path / "out"
    out.mkdir()
    with read_only(out) as applied:
        if applied:  # (not as root without chattr)
            assert_user_error(genos("preprocess", ecoli_fasta, "-o", out / "x"), "cannot write")
    assert files_under(out) == []

    with small_filesystem(tmp_path / "disk", "1m") as disk:
        if disk is None:
            pytest.skip("cannot mount a small filesystem here (not root)")
        message = assert_user_error(
            genos("preprocess", ecoli_fasta, "-o", disk / "x", "--nucleotide-tokenizer"),
            "no space left on device",
            str(disk),
        )
        assert message.count("\n") == 1
        assert files_under(disk) == []  # the temporary files were removed
