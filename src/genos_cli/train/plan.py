"""A training run, fully resolved before any work starts: config, data, parallel layout.

`genos train` turns its options (`TrainOptions`) into a `TrainPlan` with `build_plan`, which
checks everything that can fail cheaply — config errors, batch sizes that do not divide,
missing data, data made with another tokenizer, an output directory that already holds a
run — so bad options fail before a model is built or a process started. The plan then goes
to `genos_cli.train.launch`, and as a JSON file to every rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from genos_cli import extras
from genos_cli.config import GenosConfig, TrainingConfig, load_config
from genos_cli.errors import GenosError


class TrainPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    config: GenosConfig
    output_dir: Path
    checkpoint_dir: Path
    train_prefixes: list[Path]
    val_prefixes: list[Path] = Field(default_factory=list)
    tokenizer_kind: str
    tokenizer_model: Path | None = None
    num_processes: int = 1
    hostfile: Path | None = None
    total_steps: int
    resume: bool = False
    stop_after: int | None = None  # steps this invocation runs before stopping (resumable)
    smoke_test: bool = False
    eval_iters: int = 8  # micro-batches per evaluation
    wandb_project: str | None = None
    compile: bool | None = None  # None: the model's default for the device
    peak_tflops: float | None = None  # per-device peak for MFU; None: GPU table or CPU measured

    @property
    def micro_batch_size(self) -> int:
        return self.config.training.micro_batch_size

    @property
    def warmup_steps(self) -> int:
        """The configured warmup, at most a tenth of the run: a short run (a first try with
        --train-tokens) should not spend its whole length warming up."""
        return min(self.config.training.warmup_steps, max(1, self.total_steps // 10))

    @property
    def world_size(self) -> int:
        """Processes over all hosts."""
        return self.num_processes * hosts(self.hostfile)

    def grad_accum(self, world_size: int) -> int:
        """Micro-batches per rank per optimizer step for `world_size` data-parallel ranks."""
        return grad_accum(self.config.training, world_size)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> TrainPlan:
        return cls.model_validate_json(path.read_text())


def grad_accum(training: TrainingConfig, world_size: int) -> int:
    """Micro-batches per rank per optimizer step for `world_size` ranks; a GenosError when
    the batch sizes or the expert-parallel size do not fit that many processes."""
    ep = training.expert_parallel_size
    if world_size % ep:
        raise GenosError(
            f"--expert-parallel-size {ep} must divide the number of processes ({world_size})"
        )
    micro, total = training.micro_batch_size, training.global_batch_size
    if total % (micro * world_size):
        raise GenosError(
            f"global batch size {total} is not a multiple of micro batch size {micro} x "
            f"{world_size} processes; change --global-batch-size or --micro-batch-size"
        )
    return total // (micro * world_size)


def total_steps(config: GenosConfig, max_steps: int | None) -> int:
    """Optimizer steps: `max_steps` when given, else train_tokens / tokens per step, rounded up."""
    return max_steps if max_steps is not None else config.train_steps


SMOKE_TEST_STEPS = 10


@dataclass
class TrainOptions:
    """What `genos train` was given; None means 'from the config'."""

    size: str | None = None
    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # --set and the options that set one
    data_paths: list[Path] = field(default_factory=list)
    val_data_paths: list[Path] = field(default_factory=list)
    output_dir: Path | None = None
    checkpoint_dir: Path | None = None
    num_processes: int | None = None
    hostfile: Path | None = None
    max_steps: int | None = None
    resume: bool = False
    stop_after: int | None = None
    smoke_test: bool = False
    wandb_project: str | None = None
    compile: bool | None = None
    peak_tflops: float | None = None


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "genos"


def host_names(hostfile: Path) -> list[str]:
    """The hosts of a DeepSpeed-style hostfile (lines like 'node1 slots=8', # comments)."""
    if not hostfile.is_file():
        raise GenosError(f"hostfile {hostfile} does not exist")
    lines = [ln.split("#")[0].split() for ln in hostfile.read_text().splitlines()]
    names = [words[0] for words in lines if words]
    if not names:
        raise GenosError(
            f"hostfile {hostfile} lists no hosts (expected lines like 'node1 slots=8')"
        )
    return names


def hosts(hostfile: Path | None) -> int:
    """How many hosts a run spans: those of `hostfile`, or this one."""
    return 1 if hostfile is None else len(host_names(hostfile))


def _config(opts: TrainOptions) -> GenosConfig:
    overrides = dict(opts.overrides)
    cfg = load_config(opts.size, opts.config, overrides)
    overrides.update(_settings_from_tokenizer(cfg))
    if opts.smoke_test:
        # Ten optimizer steps, one micro-batch each, with logging, evaluation and a save.
        micro = cfg.training.micro_batch_size
        overrides.update(
            {
                "training.global_batch_size": micro
                * max(1, opts.num_processes or 1)
                * hosts(opts.hostfile),
                "training.log_interval": 1,
                "training.eval_interval": SMOKE_TEST_STEPS,
                "training.save_interval": SMOKE_TEST_STEPS,
                "training.warmup_steps": 2,
            }
        )
    return load_config(opts.size, opts.config, overrides)


def _settings_from_tokenizer(cfg: GenosConfig) -> dict[str, Any]:
    """Settings the run's tokenizer file decides: its vocabulary (a `--tokenizer-model` of
    another size than the config's `tokenizer.vocab_size`), from which an unset
    `model.vocab_size` follows when the config is validated again, and the fragment length
    that `data.sequence_length_bp: auto` means (resolved once, here, so the plan, the data
    cache and checkpoints record a number, and `genos eval` cuts FASTA the same way)."""
    from genos_cli.data.context_fill import reference_bp_per_token
    from genos_cli.data.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer.kind, cfg.tokenizer.model_path)
    settings: dict[str, Any] = {}
    if tokenizer.vocab_size != cfg.tokenizer.vocab_size:
        settings["tokenizer.vocab_size"] = tokenizer.vocab_size
    if cfg.data.sequence_length_bp == "auto":
        bp_per_token = reference_bp_per_token(tokenizer)
        length = cfg.data.auto_length_bp(cfg.model.max_seq_length, bp_per_token)
        settings["data.sequence_length_bp"] = length
    return settings


def _default_data(cfg: GenosConfig, *, prepare: bool) -> Path:
    """The embedded E. coli genome prepared with this run's tokenizer, cached."""
    from genos_cli.data.tokenizers import load_tokenizer

    tok = load_tokenizer(cfg.tokenizer.kind, cfg.tokenizer.model_path)
    d = cfg.data
    key = (
        f"ecoli-{tok.kind}-{tok.fingerprint().split(':')[-1][:12]}-{d.sequence_length_bp}"
        f"-{d.effective_stride_bp}-{d.effective_min_length_bp}-v{d.val_ratio}-s{d.split_seed}"
        + ("-rc" if d.reverse_complement else "")
    )
    prefix = cache_root() / "data" / key / "ecoli"
    if prepare and not Path(f"{prefix}.json").is_file():
        from genos_cli.data.pipeline import PreprocessSettings, make_plan, run
        from genos_cli.data.sources import default_genome_path

        settings = PreprocessSettings(
            inputs=(default_genome_path(),),
            output_prefix=prefix,
            tokenizer_kind=cfg.tokenizer.kind,
            tokenizer_model=cfg.tokenizer.model_path,
            window=d.window_spec(),
            val_ratio=d.val_ratio,
            split_seed=d.split_seed,
            reverse_complement=d.reverse_complement,
            append_eod=d.append_eod,
            workers=1,
            overwrite=True,
        )
        run(make_plan(settings))
    return prefix


def build_plan(opts: TrainOptions, *, dry_run: bool = False) -> TrainPlan:
    from genos_cli.data.prepared import check_tokenizer_matches, check_vocab_fits, resolve_data
    from genos_cli.data.tokenizers import load_tokenizer

    cfg = _config(opts)
    if opts.wandb_project:
        extras.check("wandb")
    tokenizer = load_tokenizer(cfg.tokenizer.kind, cfg.tokenizer.model_path)

    data_paths: list[Path | str] = list(opts.data_paths or cfg.data.train_data_paths)
    val_paths: list[Path | str] = list(opts.val_data_paths or cfg.data.val_data_paths)
    if not data_paths:
        data_paths = [_default_data(cfg, prepare=not dry_run)]
        if dry_run and not Path(f"{data_paths[0]}.json").is_file():
            return _plan(cfg, opts, [Path(f"{data_paths[0]}_train_text_document")],
                         [Path(f"{data_paths[0]}_val_text_document")])  # fmt: skip
    spec = resolve_data(data_paths, val_paths or None)
    check_tokenizer_matches(spec.tokenizer, tokenizer)
    check_vocab_fits(spec, cfg.model.resolved_vocab_size)
    return _plan(cfg, opts, list(spec.train), list(spec.val))


def _plan(cfg: GenosConfig, opts: TrainOptions, train: list[Path], val: list[Path]) -> TrainPlan:
    import torch

    nprocs = opts.num_processes or (torch.cuda.device_count() if torch.cuda.is_available() else 1)
    if nprocs < 1:
        raise GenosError(f"--num-gpus must be at least 1, got {nprocs}")
    output_dir = opts.output_dir or Path("runs") / cfg.name
    checkpoint_dir = opts.checkpoint_dir or output_dir / "checkpoints"
    steps = (
        SMOKE_TEST_STEPS
        if opts.smoke_test and opts.max_steps is None
        else total_steps(cfg, opts.max_steps)
    )
    if steps < 1:
        raise GenosError(f"--max-steps must be at least 1, got {steps}")
    if opts.stop_after is not None and opts.stop_after < 1:
        raise GenosError(f"--stop-after must be at least 1, got {opts.stop_after}")
    if opts.peak_tflops is not None and not opts.peak_tflops > 0:
        raise GenosError(f"--peak-tflops must be positive, got {opts.peak_tflops}")
    plan = TrainPlan(
        config=cfg,
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        train_prefixes=train,
        val_prefixes=val,
        tokenizer_kind=cfg.tokenizer.kind,
        tokenizer_model=cfg.tokenizer.model_path,
        num_processes=nprocs,
        hostfile=opts.hostfile,
        total_steps=steps,
        resume=opts.resume,
        stop_after=opts.stop_after,
        smoke_test=opts.smoke_test,
        wandb_project=opts.wandb_project,
        compile=opts.compile,
        peak_tflops=opts.peak_tflops,
    )
    plan.grad_accum(plan.world_size)  # batch and expert-parallel sizes must fit: say so now
    _check_precision(cfg)
    _check_output(plan)
    return plan


def check_precision(precision: str, zero_stage: int) -> None:
    """bf16/fp16 training needs ZeRO 1 or 2: only there does DeepSpeed accumulate gradients
    in fp32 (without ZeRO it accumulates and reduces them in bf16/fp16)."""
    if precision in ("bf16", "fp16") and zero_stage == 0:
        raise GenosError(
            f"--precision {precision} needs --zero-stage 1 or 2: only there does DeepSpeed "
            "accumulate gradients in fp32; use ZeRO 1 (the default) or --precision fp32"
        )


def _check_precision(cfg: GenosConfig) -> None:
    """The precision this machine would pick must work with the ZeRO stage (bf16 needs
    ZeRO 1 or 2); fp16 without CUDA is refused here too."""
    import torch

    from genos_cli.device import resolve_precision

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    check_precision(resolve_precision(cfg.training.precision, device), cfg.training.zero_stage)


def _check_output(plan: TrainPlan) -> None:
    from genos_cli.checkpoint import latest

    has_run = latest(plan.checkpoint_dir) is not None
    if plan.resume and not has_run:
        raise GenosError(
            f"--resume: no complete checkpoint in {plan.checkpoint_dir} to continue from"
        )
    if not plan.resume and has_run:
        raise GenosError(
            f"{plan.output_dir} already holds a run with checkpoints in {plan.checkpoint_dir}; "
            "pass --resume to continue it, or --output-dir for a new run"
        )
