"""Pure pieces of training: the learning-rate schedule, peaks, the launch command."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from genos_cli.config import load_config
from genos_cli.errors import GenosError
from genos_cli.telemetry.peak import gpu_peak_flops, mfu
from genos_cli.train.launch import launch_command
from genos_cli.train.plan import TrainPlan, host_names, total_steps
from genos_cli.train.schedule import cosine_lr


def test_cosine_schedule_hand_values() -> None:
    kw = {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 10, "total_steps": 110}
    assert cosine_lr(0, **kw) == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak
    assert cosine_lr(9, **kw) == pytest.approx(1e-3)
    assert cosine_lr(10, **kw) == pytest.approx(1e-3)  # cosine starts at the peak
    assert cosine_lr(60, **kw) == pytest.approx(1e-4 + 0.5 * 9e-4)  # halfway: the mean
    assert cosine_lr(110, **kw) == pytest.approx(1e-4)
    assert cosine_lr(500, **kw) == pytest.approx(1e-4)  # stays at the floor
    lrs = [cosine_lr(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def _plan(**changes: object) -> TrainPlan:
    cfg = load_config("small")
    fields = {
        "config": cfg,
        "output_dir": Path("runs/x"),
        "checkpoint_dir": Path("runs/x/checkpoints"),
        "train_prefixes": [Path("d_train_text_document")],
        "tokenizer_kind": "bpe",
        "total_steps": total_steps(cfg, None),
    }
    fields.update(changes)
    return TrainPlan(**fields)


def test_steps_and_gradient_accumulation() -> None:
    plan = _plan()
    assert plan.total_steps == math.ceil(160_000_000 / (512 * 512)) == 611
    assert plan.grad_accum(1) == 8 and plan.grad_accum(4) == 2 and plan.grad_accum(8) == 1
    with pytest.raises(GenosError, match="not a multiple"):
        plan.grad_accum(3)
    assert plan.warmup_steps == 50  # the preset's, under a tenth of 611 steps
    assert _plan(total_steps=100).warmup_steps == 10  # capped at a tenth of a short run


def test_launch_command_uses_deepspeed_launcher(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("node1 slots=8\nnode2 slots=8  # second machine\n\n")
    plan = _plan(num_processes=8, node_processes=[8, 8], hostfile=hostfile)
    cmd = launch_command(Path("runs/x/run_plan.json"), plan, master_port=29500)
    assert cmd[1:3] == ["-m", "deepspeed.launcher.runner"]
    assert cmd[cmd.index("--hostfile") + 1] == str(hostfile)
    assert cmd[cmd.index("--num_gpus") + 1] == "8"
    assert cmd[-4:] == ["--module", "genos_cli.train.rank", "--plan", "runs/x/run_plan.json"]
    assert host_names(hostfile) == ["node1", "node2"] and plan.world_size == 16
    with pytest.raises(GenosError, match="does not exist"):
        host_names(tmp_path / "missing")


def test_plan_round_trips_through_json(tmp_path: Path) -> None:
    plan = _plan(val_prefixes=[Path("d_val_text_document")], resume=True)
    plan.write(tmp_path / "plan.json")
    assert TrainPlan.read(tmp_path / "plan.json") == plan


def test_gpu_peaks_and_mfu() -> None:
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert gpu_peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert gpu_peak_flops("NVIDIA H200", "bf16") == 989e12
    # Whole-word matches: an H20 is not an H200, an L40S not an L4, an H100 NVL not an H100.
    assert gpu_peak_flops("NVIDIA H20", "bf16") == 148e12
    assert gpu_peak_flops("NVIDIA H200 NVL", "bf16") == 989e12
    assert gpu_peak_flops("NVIDIA H100 NVL", "bf16") == 835e12
    assert gpu_peak_flops("NVIDIA L40S", "bf16") == 362e12
    assert gpu_peak_flops("NVIDIA L4", "bf16") == 121e12
    assert gpu_peak_flops("NVIDIA H800", "bf16") == 989e12
    assert gpu_peak_flops("NVIDIA B200", "bf16") == 2250e12
    assert gpu_peak_flops("NVIDIA B200", "fp32") is None  # not published: no MFU
    assert gpu_peak_flops("NVIDIA GeForce RTX 4090", "bf16") == 165.2e12
    assert gpu_peak_flops("Tesla T4", "bf16") is None  # no bf16 before Ampere
    assert gpu_peak_flops("Some Future GPU", "bf16") is None
    assert mfu(1000.0, 6e6, 1.2e10) == pytest.approx(0.5)
    assert mfu(1000.0, 6e6, None) is None


def test_model_vocabulary_is_the_tokenizers_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ecoli_fasta: Path
) -> None:
    """Resolved once, in the plan: 128 rows for the shipped BPE, 16 for the nucleotide
    tokenizer, a custom BPE model's own size; an explicit model.vocab_size wins and must
    hold the tokenizer's ids."""
    from genos_cli.data.tokenizers.training import train_sentencepiece
    from genos_cli.train.plan import TrainOptions, build_plan

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def vocab(**overrides: object) -> tuple[int | None, int]:
        opts = TrainOptions(size="small", overrides=overrides, output_dir=tmp_path / "run")
        cfg = build_plan(opts, dry_run=True).config
        return cfg.model.vocab_size, cfg.tokenizer.vocab_size

    assert vocab() == (128, 128)
    assert vocab(**{"tokenizer.kind": "nucleotide", "tokenizer.vocab_size": 16}) == (16, 16)
    nucleotide_128 = {"tokenizer.kind": "nucleotide", "tokenizer.vocab_size": 16,
                      "model.vocab_size": 128}  # fmt: skip
    assert vocab(**nucleotide_128) == (128, 16)
    custom = train_sentencepiece(
        [ecoli_fasta], tmp_path / "bpe40", vocab_size=40, max_train_bp=100_000, sentence_bp=1000
    ).model_path
    assert vocab(**{"tokenizer.model_path": str(custom)}) == (40, 40)
    with pytest.raises(GenosError, match=r"tokenizer.vocab_size \(128\) must not exceed"):
        vocab(**{"model.vocab_size": 64})


def test_embedded_data_cache_is_keyed_by_augmentation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genos_cli.train.plan import TrainOptions, build_plan

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def data_dir(**overrides: object) -> Path:
        opts = TrainOptions(size="small", overrides=overrides, output_dir=tmp_path / "run")
        return build_plan(opts, dry_run=True).train_prefixes[0].parent

    plain, augmented = data_dir(), data_dir(**{"data.reverse_complement": True})
    assert augmented != plain and augmented.name == plain.name + "-rc"


def test_fragment_length_auto_is_resolved_in_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan (and so checkpoints, the data cache, genos eval) records the number 'auto'
    means for the run's tokenizer and context: 2 x 512 tokens x 2.87 bp (BPE) = 2944 bp."""
    from genos_cli.train.plan import TrainOptions, build_plan

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def plan(**overrides: object) -> TrainPlan:
        opts = TrainOptions(size="small", overrides=overrides, output_dir=tmp_path / "run")
        return build_plan(opts, dry_run=True)

    auto = {"data.sequence_length_bp": "auto"}
    bpe = plan(**auto)
    assert bpe.config.data.sequence_length_bp == 2944
    assert bpe.config.data.window_spec().length == 2944
    assert "-2944-2944-2944-" in bpe.train_prefixes[0].parent.name  # the cache key
    nucleotide = {"tokenizer.kind": "nucleotide", "tokenizer.vocab_size": 16}
    assert plan(**auto, **nucleotide).config.data.sequence_length_bp == 1024
    short = plan(**auto, **{"model.max_seq_length": 128, "data.contexts_per_document": 4})
    assert short.config.data.sequence_length_bp == 64 * math.ceil(4 * 128 * 2.8698 / 64)
