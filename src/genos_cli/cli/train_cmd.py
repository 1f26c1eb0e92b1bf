"""`genos train`: train a Genos MoE model with DeepSpeed, from a preset or a config file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from genos_cli.cli._common import console, reports_errors

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Engine = Literal["deepspeed", "megatron"]


@reports_errors
def train(
    size: Annotated[
        str | None, typer.Option(help="Preset: small, medium or large (default: small).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="A genos config YAML file.")] = None,
    data_path: Annotated[
        list[Path] | None,
        typer.Option(
            help="Data from `genos preprocess`: its -o prefix (train + val via the manifest) or "
            "a *_text_document prefix; repeatable (default: the embedded E. coli genome)."
        ),
    ] = None,
    val_data_path: Annotated[
        list[Path] | None, typer.Option(help="Validation data prefix (repeatable).")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="Run directory for logs (default: runs/NAME).")
    ] = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Where checkpoints go (default: OUTPUT_DIR/checkpoints).")
    ] = None,
    tokenizer_model: Annotated[
        Path | None, typer.Option(help="SentencePiece model (default: the one genos ships).")
    ] = None,
    nucleotide_tokenizer: Annotated[
        bool, typer.Option("--nucleotide-tokenizer", help="One token per base.")
    ] = False,
    num_gpus: Annotated[
        int | None,
        typer.Option(help="Processes per node: GPUs when present, else CPU processes (gloo)."),
    ] = None,
    hostfile: Annotated[
        Path | None, typer.Option(help="DeepSpeed hostfile for multi-node runs.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many optimizer steps.")
    ] = None,
    train_tokens: Annotated[
        int | None, typer.Option(help="Training length in tokens (sets the step count).")
    ] = None,
    micro_batch_size: Annotated[
        int | None, typer.Option(help="Sequences per process per pass.")
    ] = None,
    global_batch_size: Annotated[
        int | None, typer.Option(help="Sequences per optimizer step (accumulation derived).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    precision: Annotated[
        Precision | None, typer.Option(help="auto = bf16 on GPUs that have it, fp32 on CPU.")
    ] = None,
    zero_stage: Annotated[
        int | None, typer.Option(help="DeepSpeed ZeRO stage 0, 1 or 2 (3 cannot shard MoE).")
    ] = None,
    expert_parallel_size: Annotated[
        int | None, typer.Option(help="Processes the experts of a layer are spread over.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of initialisation and data order.")] = None,
    eval_interval: Annotated[int | None, typer.Option(help="Evaluate every N steps.")] = None,
    save_interval: Annotated[int | None, typer.Option(help="Checkpoint every N steps.")] = None,
    log_interval: Annotated[int | None, typer.Option(help="Log every N steps.")] = None,
    on_nan: Annotated[
        Literal["stop", "skip"] | None,
        typer.Option(
            help="A non-finite loss or gradient: stop with an error (default), or skip that "
            "step's update with a warning (10 in a row stop the run)."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the latest complete checkpoint.")
    ] = False,
    stop_after: Annotated[
        int | None,
        typer.Option(
            help="Stop with a checkpoint after N steps of this invocation (the schedule stays "
            "the full run's); continue with --resume."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print config, DeepSpeed config and command; run nothing."),
    ] = False,
    test: Annotated[
        bool, typer.Option("--test", help="A 10-step smoke run (one micro-batch per step).")
    ] = False,
    wandb_project: Annotated[
        str | None, typer.Option(help="Also log to this Weights & Biases project.")
    ] = None,
    compile: Annotated[
        bool | None,
        typer.Option("--compile/--no-compile", help="torch.compile the model (default: auto)."),
    ] = None,
    peak_tflops: Annotated[
        float | None,
        typer.Option(
            help="Peak TFLOP/s of one device for MFU (default: the GPU's dense figure for the "
            "dtype from genos's table, or this CPU's measured matmul peak)."
        ),
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            help="deepspeed: genos's trainer; megatron: the same run as a Megatron-LM "
            "pretrain_gpt.py command (printed with --dry-run, else run)."
        ),
    ] = "deepspeed",
    megatron_path: Annotated[
        Path | None,
        typer.Option(help="Megatron-LM clone for --engine megatron (default: $MEGATRON_LM_PATH)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any config setting: key.path=value (repeatable)."),
    ] = None,
) -> None:
    """Train a Genos Mixture-of-Experts DNA language model (DeepSpeed; CPU or GPUs)."""
    from genos_cli.config import config_to_yaml, parse_overrides
    from genos_cli.train.launch import describe, dump_json, launch
    from genos_cli.train.plan import TrainOptions, build_plan

    overrides: dict[str, Any] = parse_overrides(set_ or [])
    flag_settings = {
        "training.train_tokens": train_tokens,
        "training.micro_batch_size": micro_batch_size,
        "training.global_batch_size": global_batch_size,
        "training.lr": lr,
        "training.precision": precision,
        "training.zero_stage": zero_stage,
        "training.expert_parallel_size": expert_parallel_size,
        "training.seed": seed,
        "training.eval_interval": eval_interval,
        "training.save_interval": save_interval,
        "training.log_interval": log_interval,
        "training.on_nan": on_nan,
    }
    overrides.update({k: v for k, v in flag_settings.items() if v is not None})
    opts = TrainOptions(
        size=size,
        config=config,
        overrides=overrides,
        data_paths=data_path or [],
        val_data_paths=val_data_path or [],
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        tokenizer_model=tokenizer_model,
        nucleotide_tokenizer=nucleotide_tokenizer,
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
        return
    if dry_run:
        info = describe(plan)
        console.print("[bold]# resolved config[/]")
        console.print(config_to_yaml(plan.config), markup=False, highlight=False)
        console.print(
            f"[bold]# run[/]\nsteps: {plan.total_steps}   processes: {info['world_size']}   "
            f"precision: {info['precision']}\ndata: {', '.join(map(str, plan.train_prefixes))}\n"
            f"validation: {', '.join(map(str, plan.val_prefixes)) or '-'}\n"
            f"output: {plan.output_dir}   checkpoints: {plan.checkpoint_dir}",
            highlight=False,
        )
        console.print("[bold]# DeepSpeed config[/]")
        console.print(dump_json(info["deepspeed_config"]), markup=False, highlight=False)
        console.print("[bold]# launch command[/]")
        console.print(info["command"], markup=False, highlight=False, soft_wrap=True)
        return
    code = launch(plan)
    if code:
        raise typer.Exit(code)


def _megatron(plan: Any, *, dry_run: bool, megatron_path: Path | None) -> None:
    """--engine megatron: print or run the Megatron-LM command of the plan."""
    from genos_cli.errors import GenosError
    from genos_cli.train import megatron

    cmd, script = megatron.plan_command(plan, megatron_path)
    if dry_run:
        console.print(
            f"[bold]# run[/]\nsteps: {plan.total_steps}   processes per node: "
            f"{plan.num_processes}\ndata: {', '.join(map(str, plan.train_prefixes))}\n"
            f"validation: {', '.join(map(str, plan.val_prefixes)) or '-'}\n"
            f"checkpoints (Megatron format): {plan.checkpoint_dir}",
            highlight=False,
        )
        console.print("[bold]# Megatron-LM launch command[/]")
        console.print(cmd.shell(), markup=False, highlight=False, soft_wrap=True)
        return
    if script is None:
        raise GenosError(megatron.INSTALL_HINT)
    code = megatron.run(cmd, script.parent)
    if code:
        raise typer.Exit(code)
