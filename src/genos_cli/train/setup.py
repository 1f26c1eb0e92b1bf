"""From command-line options to a checked `TrainPlan`, and launching it.

Everything that can fail cheaply fails here, before a model is built or a process started:
config errors, batch sizes that do not divide, missing data, data made with another
tokenizer, an output directory that already holds a run.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genos_cli import extras
from genos_cli.config import GenosConfig, load_config
from genos_cli.errors import GenosError
from genos_cli.train.plan import PLAN_NAME, TrainPlan, launch_command, shell_line, total_steps

SMOKE_TEST_STEPS = 10


@dataclass
class TrainOptions:
    """What `genos train` was given; None means 'from the config'."""

    size: str | None = None
    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    data_paths: list[Path] = field(default_factory=list)
    val_data_paths: list[Path] = field(default_factory=list)
    output_dir: Path | None = None
    checkpoint_dir: Path | None = None
    tokenizer_model: Path | None = None
    nucleotide_tokenizer: bool = False
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


def _hosts(hostfile: Path | None) -> int:
    if hostfile is None:
        return 1
    if not hostfile.is_file():
        raise GenosError(f"hostfile {hostfile} does not exist")
    lines = [ln.split("#")[0].strip() for ln in hostfile.read_text().splitlines()]
    hosts = [ln for ln in lines if ln]
    if not hosts:
        raise GenosError(
            f"hostfile {hostfile} lists no hosts (expected lines like 'node1 slots=8')"
        )
    return len(hosts)


def _config(opts: TrainOptions) -> GenosConfig:
    overrides = dict(opts.overrides)
    if opts.nucleotide_tokenizer and opts.tokenizer_model is not None:
        raise GenosError("use either --tokenizer-model or --nucleotide-tokenizer, not both")
    if opts.nucleotide_tokenizer:
        overrides.update({"tokenizer.kind": "nucleotide", "tokenizer.vocab_size": 16})
    elif opts.tokenizer_model is not None:
        overrides.update(
            {"tokenizer.kind": "bpe", "tokenizer.model_path": str(opts.tokenizer_model)}
        )
    if opts.smoke_test:
        # Ten optimizer steps, one micro-batch each, with logging, evaluation and a save.
        cfg = load_config(opts.size, opts.config, overrides)
        micro = cfg.training.micro_batch_size
        overrides.update(
            {
                "training.global_batch_size": micro
                * max(1, opts.num_processes or 1)
                * _hosts(opts.hostfile),
                "training.log_interval": 1,
                "training.eval_interval": SMOKE_TEST_STEPS,
                "training.save_interval": SMOKE_TEST_STEPS,
                "training.warmup_steps": 2,
            }
        )
    return load_config(opts.size, opts.config, overrides)


def _default_data(cfg: GenosConfig, *, prepare: bool) -> Path:
    """The embedded E. coli genome prepared with this run's tokenizer, cached."""
    from genos_cli.data.tokenizers import load_tokenizer

    tok = load_tokenizer(cfg.tokenizer.kind, cfg.tokenizer.model_path)
    d = cfg.data
    key = (
        f"ecoli-{tok.kind}-{tok.fingerprint().split(':')[-1][:12]}-{d.sequence_length_bp}"
        f"-{d.effective_stride_bp}-{d.effective_min_length_bp}-v{d.val_ratio}-s{d.split_seed}"
    )
    prefix = cache_root() / "data" / key / "ecoli"
    if prepare and not Path(f"{prefix}.json").is_file():
        from genos_cli.data.pipeline import PreprocessSettings, plan, run
        from genos_cli.data.sources import default_genome_path
        from genos_cli.data.windows import WindowSpec

        settings = PreprocessSettings(
            inputs=(default_genome_path(),),
            output_prefix=prefix,
            tokenizer_kind=cfg.tokenizer.kind,
            tokenizer_model=cfg.tokenizer.model_path,
            window=WindowSpec(
                d.sequence_length_bp, d.effective_stride_bp, d.effective_min_length_bp
            ),
            val_ratio=d.val_ratio,
            split_seed=d.split_seed,
            append_eod=d.append_eod,
            workers=1,
            overwrite=True,
        )
        run(plan(settings))
    return prefix


def build_plan(opts: TrainOptions, *, dry_run: bool = False) -> TrainPlan:
    from genos_cli.data.tokenizers import load_tokenizer
    from genos_cli.train.data import check_tokenizer_matches, check_vocab_fits, resolve_data

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
    check_vocab_fits(spec, cfg.model.vocab_size)
    return _plan(cfg, opts, list(spec.train), list(spec.val))


def _plan(cfg: GenosConfig, opts: TrainOptions, train: list[Path], val: list[Path]) -> TrainPlan:
    import torch

    nprocs = opts.num_processes or (torch.cuda.device_count() if torch.cuda.is_available() else 1)
    if nprocs < 1:
        raise GenosError(f"--num-gpus must be at least 1, got {nprocs}")
    world = nprocs * _hosts(opts.hostfile)
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
    plan.grad_accum(world)  # batch sizes must divide: say so now
    ep = cfg.training.expert_parallel_size
    if world % ep:
        raise GenosError(
            f"--expert-parallel-size {ep} must divide the number of processes ({world})"
        )
    _check_output(plan)
    return plan


def _check_output(plan: TrainPlan) -> None:
    from genos_cli.checkpoints import latest

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


def describe(plan: TrainPlan) -> dict[str, Any]:
    """What --dry-run prints: the DeepSpeed config and the launch command."""
    import torch

    from genos_cli.train import engine

    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    precision = engine.resolve_precision(plan.config.training.precision, device)
    world = plan.num_processes * _hosts(plan.hostfile)
    ds_config = engine.deepspeed_config(plan, plan.grad_accum(world), precision)
    plan_path = plan.output_dir / PLAN_NAME
    if plan.num_processes == 1 and plan.hostfile is None:
        command = (
            shell_line(["python", "-m", "genos_cli.train.worker", "--plan", str(plan_path)])
            + "   (genos runs this in its own process)"
        )
    else:
        command = shell_line(launch_command(plan_path, plan, master_port=29500))
    return {
        "deepspeed_config": ds_config,
        "command": command,
        "precision": precision,
        "world_size": world,
    }


def launch(plan: TrainPlan) -> int:
    """Run the plan: in this process for one process on one node, else through DeepSpeed's
    launcher (which starts every rank, on every host of the hostfile)."""
    from genos_cli.atomic import ensure_writable_dir

    # A read-only or mistyped path fails now, not at the first checkpoint hours later.
    ensure_writable_dir(plan.output_dir, "output directory")
    ensure_writable_dir(plan.checkpoint_dir, "checkpoint directory")
    plan_path = plan.output_dir / PLAN_NAME
    plan.write(plan_path)
    if plan.num_processes == 1 and plan.hostfile is None:
        from genos_cli.train.session import run_training

        run_training(plan)
        return 0
    from genos_cli.train.engine import _free_port

    cmd = launch_command(plan_path, plan, master_port=_free_port())
    env = dict(os.environ)
    if not _cuda_visible():
        # CPU ranks: split the cores between the processes instead of oversubscribing.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // plan.num_processes)))
    return subprocess.run(cmd, env=env, check=False).returncode


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
