"""`genos train`: train a Genos MoE model with DeepSpeed, from a preset or a config file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

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
HostfileOpt = Annotated[Path | None, typer.Option(help="DeepSpeed hostfile for multi-node runs.")]
MaxStepsOpt = Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue from the latest complete checkpoint.")
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
    typer.Option("--dry-run", help="Print config, DeepSpeed config and command; run nothing."),
]
SmokeTestOpt = Annotated[
    bool, typer.Option("--test", help="A 10-step smoke run (one micro-batch per step).")
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
    max_steps: MaxStepsOpt = None,
    train_tokens: Annotated[int | None, _training("train_tokens")] = None,
    micro_batch_size: Annotated[int | None, _training("micro_batch_size")] = None,
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
    resume: ResumeOpt = False,
    stop_after: StopAfterOpt = None,
    dry_run: DryRunOpt = False,
    test: SmokeTestOpt = False,
    wandb_project: WandbOpt = None,
    compile: CompileOpt = None,
    peak_tflops: PeakTflopsOpt = None,
    engine: EngineOpt = "deepspeed",
    megatron_path: MegatronPathOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train a Genos Mixture-of-Experts DNA language model (DeepSpeed; CPU or GPUs)."""
    from genos_cli.config import parse_overrides
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
        hostfile=hostfile,
        max_steps=max_steps,
        resume=resume,
        stop_after=stop_after,
        smoke_test=test,
        wandb_project=wandb_project,
        compile=compile,
        peak_tflops=peak_tflops,
    )
    plan = build_plan(opts, dry_run=dry_run)
    if engine == "megatron":
        _megatron(plan, dry_run=dry_run, megatron_path=megatron_path)
    elif dry_run:
        _print_dry_run(plan)
    elif code := launch(plan):
        raise typer.Exit(code)


def _run_summary(plan: TrainPlan, processes: str, where: str) -> str:
    """The `# run` block of a dry run: steps, processes, data, where output goes."""
    return (
        f"[bold]# run[/]\nsteps: {plan.total_steps}   {processes}\n"
        f"data: {', '.join(map(str, plan.train_prefixes))}\n"
        f"validation: {', '.join(map(str, plan.val_prefixes)) or '-'}\n{where}"
    )


def _print_dry_run(plan: TrainPlan) -> None:
    """--dry-run: the resolved config, the run, the DeepSpeed config and the launch command."""
    from genos_cli.config import config_to_yaml
    from genos_cli.train.launch import describe, dump_json

    info = describe(plan)
    console.print("[bold]# resolved config[/]")
    console.print(config_to_yaml(plan.config), markup=False, highlight=False)
    processes = f"processes: {info['world_size']}   precision: {info['precision']}"
    where = f"output: {plan.output_dir}   checkpoints: {plan.checkpoint_dir}"
    console.print(_run_summary(plan, processes, where), highlight=False)
    console.print("[bold]# DeepSpeed config[/]")
    console.print(dump_json(info["deepspeed_config"]), markup=False, highlight=False)
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
