"""`genos train`: train a Genos MoE model with DeepSpeed, from a preset or a config file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from typer.core import TyperCommand

from genos_cli.cli._common import (
    NucleotideTokenizerOpt,
    TokenizerModelOpt,
    config_help,
    console,
    flag_settings,
    reports_errors,
    tokenizer_settings,
)
from genos_cli.config import DEFAULT_PRESET, preset_names
from genos_cli.config.schema import OnNan, Precision

if TYPE_CHECKING:
    from genos_cli.train.plan import TrainPlan

Engine = Literal["deepspeed", "megatron"]
Launcher = Literal["deepspeed", "torchrun", "slurm", "none"]
LATEST = "@latest"  # what `--resume` without a path stands for

ENVIRONMENT_HELP = (
    "Environment: "
    "GENOS_CACHE_DIR: where genos caches the embedded genome prepared per tokenizer and the "
    "CPU peak (default: $XDG_CACHE_HOME/genos, i.e. ~/.cache/genos). "
    "GENOS_OUTPUT_DIR: the parent of the default output directory (default: runs, giving "
    "runs/NAME). "
    "WANDB_API_KEY, WANDB_ENTITY, WANDB_MODE, WANDB_DIR, ... are read by Weights & Biases "
    "itself (--wandb-project). "
    "Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or srun "
    "(SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST, SLURM_JOB_ID) each "
    "process joins the same run; docs/train.md has a SLURM example."
)


class TrainCommand(TyperCommand):
    """`genos train`, where `--resume` takes an optional path: `--resume` alone (at the end,
    or before another option) means the latest checkpoint."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args = list(args)
        for i, word in enumerate(args):
            if word == "--resume" and (i + 1 == len(args) or args[i + 1].startswith("-")):
                args[i] = f"--resume={LATEST}"
        return super().parse_args(ctx, args)


# Options that each set one training setting: `--micro-batch-size 8` is
# `--set training.micro_batch_size=8`, and a given option wins over --set.
_TRAINING_OPTIONS = (
    "train_tokens", "micro_batch_size", "global_batch_size", "lr", "precision", "zero_stage",
    "expert_parallel_size", "seed", "eval_interval", "save_interval", "log_interval", "on_nan",
)  # fmt: skip


def _training(setting: str) -> Any:
    return typer.Option(help=config_help(f"training.{setting}"))


SizeOpt = Annotated[
    str | None,
    typer.Option(help=f"Preset: {', '.join(preset_names())} (default: {DEFAULT_PRESET})."),
]
ConfigOpt = Annotated[Path | None, typer.Option(help="A genos config YAML file.")]
DataPathOpt = Annotated[list[Path] | None, typer.Option(help=config_help("data.train_data_paths"))]
ValDataPathOpt = Annotated[list[Path] | None, typer.Option(help=config_help("data.val_data_paths"))]
OutputDirOpt = Annotated[
    Path | None, typer.Option(help="Run directory for logs (default: runs/NAME).")
]
CheckpointDirOpt = Annotated[
    Path | None, typer.Option(help="Where checkpoints go (default: OUTPUT_DIR/checkpoints).")
]
NumGpusOpt = Annotated[
    int | None,
    typer.Option(help="Processes per node: GPUs when present, else CPU processes (gloo)."),
]
HostfileOpt = Annotated[
    Path | None,
    typer.Option(
        help="DeepSpeed hostfile for multi-node runs ('node1 slots=8' lines): each host runs "
        "its slots, or --num-gpus when given."
    ),
]
LauncherOpt = Annotated[
    Launcher | None,
    typer.Option(
        help="What starts the processes: deepspeed (DeepSpeed's launcher; one process runs "
        "here), torchrun, slurm (srun in an allocation; with --dry-run an sbatch script) or "
        "none (this process). Default: deepspeed, or none when this process already is a "
        "rank torchrun or srun started.",
        show_default=False,
    ),
]
NodesOpt = Annotated[
    int | None,
    typer.Option(help="Nodes for --launcher slurm or torchrun (each runs --num-gpus processes)."),
]
MaxStepsOpt = Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")]
ResumeOpt = Annotated[
    str | None,
    typer.Option(
        "--resume",
        metavar="[PATH]",
        help="Continue a run (model, optimizer, data position, step): from the latest "
        "complete checkpoint, or from PATH (a step_XXXXXXXX directory, a checkpoints "
        "directory or a run directory).",
        show_default=False,
    ),
]
InitFromOpt = Annotated[
    Path | None,
    typer.Option(
        help="Start a new run (step 0, fresh optimizer and schedule) from the weights of a "
        "genos checkpoint or a `genos export hf` directory: fine-tuning. Its model must be "
        "this run's.",
        show_default=False,
    ),
]
TensorBoardOpt = Annotated[
    bool,
    typer.Option(
        "--tensorboard",
        help="Also write the log's scalars for TensorBoard to OUTPUT_DIR/tensorboard "
        "(needs pip install 'genos[tensorboard]').",
    ),
]
StopAfterOpt = Annotated[
    int | None,
    typer.Option(
        help="Stop with a checkpoint after N steps of this invocation (the schedule stays "
        "the full run's); continue with --resume."
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print config, DeepSpeed config and launch command (--launcher slurm: write "
        "OUTPUT_DIR/train.sbatch and print it); run nothing.",
    ),
]
SmokeTestOpt = Annotated[
    bool,
    typer.Option(
        "--test",
        help="A smoke run in seconds: 4 steps of one 2-sequence micro-batch per process, "
        "with logging, evaluation and a checkpoint.",
    ),
]
WandbOpt = Annotated[str | None, typer.Option(help="Also log to this Weights & Biases project.")]
CompileOpt = Annotated[
    bool | None,
    typer.Option("--compile/--no-compile", help="torch.compile the model (default: auto)."),
]
PeakTflopsOpt = Annotated[
    float | None,
    typer.Option(
        help="Peak TFLOP/s of one device for MFU (default: the GPU's dense figure for the "
        "dtype from genos's table, or this CPU's measured matmul peak)."
    ),
]
EngineOpt = Annotated[
    Engine,
    typer.Option(
        help="deepspeed: genos's trainer; megatron: the same run as a Megatron-LM "
        "pretrain_gpt.py command (printed with --dry-run, else run)."
    ),
]
MegatronPathOpt = Annotated[
    Path | None,
    typer.Option(help="Megatron-LM clone for --engine megatron (default: $MEGATRON_LM_PATH)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config setting: key.path=value (repeatable)."),
]


@reports_errors
def train(
    ctx: typer.Context,
    size: SizeOpt = None,
    config: ConfigOpt = None,
    data_path: DataPathOpt = None,
    val_data_path: ValDataPathOpt = None,
    output_dir: OutputDirOpt = None,
    checkpoint_dir: CheckpointDirOpt = None,
    tokenizer_model: TokenizerModelOpt = None,
    nucleotide_tokenizer: NucleotideTokenizerOpt = False,
    num_gpus: NumGpusOpt = None,
    hostfile: HostfileOpt = None,
    launcher: LauncherOpt = None,
    nodes: NodesOpt = None,
    max_steps: MaxStepsOpt = None,
    train_tokens: Annotated[int | None, _training("train_tokens")] = None,
    micro_batch_size: Annotated[
        int | None,
        typer.Option(
            help=config_help("training.micro_batch_size")
            + " Not given, on a CPU: about 4,096 tokens (as fast as the GPU-sized preset's, in "
            "a quarter of the memory; the global batch is kept)."
        ),
    ] = None,
    global_batch_size: Annotated[int | None, _training("global_batch_size")] = None,
    lr: Annotated[float | None, _training("lr")] = None,
    precision: Annotated[Precision | None, _training("precision")] = None,
    zero_stage: Annotated[int | None, _training("zero_stage")] = None,
    expert_parallel_size: Annotated[int | None, _training("expert_parallel_size")] = None,
    seed: Annotated[int | None, _training("seed")] = None,
    eval_interval: Annotated[int | None, _training("eval_interval")] = None,
    save_interval: Annotated[int | None, _training("save_interval")] = None,
    log_interval: Annotated[int | None, _training("log_interval")] = None,
    on_nan: Annotated[OnNan | None, _training("on_nan")] = None,
    resume: ResumeOpt = None,
    init_from: InitFromOpt = None,
    stop_after: StopAfterOpt = None,
    dry_run: DryRunOpt = False,
    test: SmokeTestOpt = False,
    wandb_project: WandbOpt = None,
    tensorboard: TensorBoardOpt = False,
    compile: CompileOpt = None,
    peak_tflops: PeakTflopsOpt = None,
    engine: EngineOpt = "deepspeed",
    megatron_path: MegatronPathOpt = None,
    set_: SetOpt = None,
    # `deepspeed -m genos_cli train ...` (DeepSpeed's own CLI) passes each rank --local_rank;
    # the rank reads LOCAL_RANK from the environment, which DeepSpeed sets too.
    local_rank: Annotated[int | None, typer.Option("--local_rank", hidden=True)] = None,
) -> None:
    """Train a Genos Mixture-of-Experts DNA language model (DeepSpeed; CPU or GPUs)."""
    from genos_cli.config import parse_overrides
    from genos_cli.errors import GenosError
    from genos_cli.train.launch import launch
    from genos_cli.train.plan import TrainOptions, build_plan

    training = flag_settings(ctx.params, {name: name for name in _TRAINING_OPTIONS})
    tokenizer = tokenizer_settings(tokenizer_model, nucleotide_tokenizer)
    overrides = {
        **parse_overrides(set_ or []),
        **{f"training.{key}": value for key, value in training.items()},
        **{f"tokenizer.{key}": value for key, value in tokenizer.items()},
    }
    opts = TrainOptions(
        size=size,
        config=config,
        overrides=overrides,
        data_paths=data_path or [],
        val_data_paths=val_data_path or [],
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        num_processes=num_gpus,
        nodes=nodes,
        hostfile=hostfile,
        launcher=launcher,
        max_steps=max_steps,
        resume=resume == LATEST,
        resume_from=None if resume in (None, LATEST) else Path(resume),
        init_from=init_from,
        stop_after=stop_after,
        smoke_test=test,
        wandb_project=wandb_project,
        tensorboard=tensorboard,
        compile=compile,
        peak_tflops=peak_tflops,
        # Megatron-LM's command is for GPUs: the preset's micro-batch, not the CPU's.
        choose_micro_batch=engine != "megatron",
    )
    if engine == "megatron" and (launcher not in (None, "deepspeed") or nodes or init_from):
        raise GenosError(
            "--engine megatron prints or runs its own torchrun command from the plan; "
            "--launcher, --nodes and --init-from are for genos's trainer"
        )
    plan = build_plan(opts, dry_run=dry_run)
    rank_args = command_args(ctx, drop=_LAUNCH_OPTIONS)
    if engine == "megatron":
        _megatron(plan, dry_run=dry_run, megatron_path=megatron_path)
    elif dry_run:
        _print_dry_run(plan, rank_args)
    elif code := launch(plan, rank_args):
        raise typer.Exit(code)


# What a rank started by torchrun / srun is not given again: they describe the launch.
_LAUNCH_OPTIONS = frozenset({"launcher", "nodes", "num_gpus", "hostfile", "dry_run", "engine",
                             "megatron_path", "local_rank"})  # fmt: skip


def command_args(ctx: typer.Context, drop: frozenset[str] = frozenset()) -> list[str]:
    """The options this `genos train` was given on its command line (not their defaults), as
    words for another `genos train`: what every rank torchrun or srun starts runs."""
    words: list[str] = []
    for param in ctx.command.params:
        name = param.name
        if name is None or name in drop:
            continue
        source = ctx.get_parameter_source(name)
        if source is None or source.name != "COMMANDLINE":
            continue
        value = ctx.params[name]
        opts: list[str] = list(getattr(param, "opts", []))
        secondary: list[str] = list(getattr(param, "secondary_opts", []))
        if name == "resume":
            words += ["--resume"] if value == LATEST else ["--resume", str(value)]
        elif isinstance(value, bool):
            if value:
                words.append(opts[0])
            elif secondary:
                words.append(secondary[0])
        elif isinstance(value, list | tuple):
            for item in value:
                words += [opts[0], str(item)]
        elif value is not None:
            words += [opts[0], str(value)]
    return words


def _run_summary(plan: TrainPlan, processes: str, where: str) -> str:
    """The `# run` block of a dry run: steps, processes, data, where output goes."""
    return (
        f"[bold]# run[/]\nsteps: {plan.total_steps}   {processes}\n"
        f"data: {', '.join(map(str, plan.train_prefixes))}\n"
        f"validation: {', '.join(map(str, plan.val_prefixes)) or '-'}\n{where}"
    )


def _print_dry_run(plan: TrainPlan, rank_args: list[str]) -> None:
    """--dry-run: the resolved config, the run, the DeepSpeed config and the launch command
    (for SLURM: the sbatch script, written to OUTPUT_DIR/train.sbatch)."""
    from genos_cli.config import config_to_yaml
    from genos_cli.train.launch import describe, dump_json, write_sbatch

    info = describe(plan, rank_args)
    console.print("[bold]# resolved config[/]")
    console.print(config_to_yaml(plan.config), markup=False, highlight=False)
    nodes = f" on {plan.nodes} nodes ({', '.join(map(str, plan.processes_per_node))})"
    processes = (
        f"processes: {info['world_size']}{nodes if plan.nodes > 1 else ''}   "
        f"launcher: {plan.launcher}   precision: {info['precision']}"
    )
    where = f"output: {plan.output_dir}   checkpoints: {plan.checkpoint_dir}"
    extra = []
    if plan.micro_batch is not None:
        global_batch = plan.config.training.global_batch_size
        extra.append(plan.micro_batch.describe(global_batch, plan.grad_accum(plan.world_size)))
    if plan.init_from is not None:
        extra.append(f"weights from: {plan.init_from.describe()}")
    if plan.resume_from is not None:
        extra.append(f"resume from: {plan.resume_from}")
    summary = _run_summary(plan, processes, where) + "".join(f"\n{line}" for line in extra)
    console.print(summary, highlight=False)
    console.print("[bold]# DeepSpeed config[/]")
    console.print(dump_json(info["deepspeed_config"]), markup=False, highlight=False)
    if "sbatch" in info:
        write_sbatch(info["sbatch_path"], info["sbatch"])
        console.print(f"[bold]# sbatch script[/] (written to {info['sbatch_path']})",
                      highlight=False, soft_wrap=True)  # fmt: skip
        console.print(info["sbatch"], markup=False, highlight=False, soft_wrap=True)
    console.print("[bold]# launch command[/]")
    console.print(info["command"], markup=False, highlight=False, soft_wrap=True)


def _megatron(plan: TrainPlan, *, dry_run: bool, megatron_path: Path | None) -> None:
    """--engine megatron: print or run the Megatron-LM command of the plan."""
    from genos_cli.errors import GenosError
    from genos_cli.train import megatron

    cmd, script = megatron.plan_command(plan, megatron_path)
    if dry_run:
        processes = f"processes per node: {plan.num_processes}"
        where = f"checkpoints (Megatron format): {plan.checkpoint_dir}"
        console.print(_run_summary(plan, processes, where), highlight=False)
        console.print("[bold]# Megatron-LM launch command[/]")
        console.print(cmd.shell(), markup=False, highlight=False, soft_wrap=True)
        return
    if script is None:
        raise GenosError(megatron.INSTALL_HINT)
    code = megatron.run(cmd, script.parent)
    if code:
        raise typer.Exit(code)
