"""A training run, fully resolved before any work starts: config, data, parallel layout.

`genos train` turns its options (`TrainOptions`) into a `TrainPlan` with `build_plan`, which
checks everything that can fail cheaply — config errors, batch sizes that do not divide,
missing data, data made with another tokenizer, an output directory that already holds a
run, weights to start from that do not fit — so bad options fail before a model is built or
a process started. It also settles what the options leave open: where the processes are
(`layout`: this machine, a hostfile, --nodes, or the torchrun / srun job this process is a
rank of), `--test`'s budget, and on a CPU the micro-batch (`auto_micro_batch`). The plan
then goes to `genos_cli.train.launch`, and as a JSON file to every rank (processes torchrun
or srun started build the same plan themselves).
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from genos_cli import extras
from genos_cli.config import GenosConfig, TrainingConfig, load_config
from genos_cli.errors import GenosError
from genos_cli.paths import cache_dir, runs_dir
from genos_cli.train import cluster
from genos_cli.train.init_from import InitSource, check_resume_source, resolve_init_source

Launcher = Literal["deepspeed", "torchrun", "slurm", "none"]
LAUNCHERS: tuple[Launcher, ...] = ("deepspeed", "torchrun", "slurm", "none")


class MicroBatchChoice(BaseModel):
    """A micro-batch genos chose because the user set none (`--micro-batch-size` wins)."""

    model_config = ConfigDict(extra="forbid")

    size: int
    preset: int  # what the preset says (sized for GPUs)
    reason: str  # "sized for cpu"

    def describe(self, global_batch: int, grad_accum: int) -> str:
        return (
            f"micro-batch {self.size} (auto: {self.reason}; global batch {global_batch} kept, "
            f"{grad_accum} accumulation step{'s' if grad_accum != 1 else ''}; "
            "--micro-batch-size sets it)"
        )


class TrainPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    config: GenosConfig
    output_dir: Path
    checkpoint_dir: Path
    train_prefixes: list[Path]
    val_prefixes: list[Path] = Field(default_factory=list)
    tokenizer_kind: str
    tokenizer_model: Path | None = None
    num_processes: int = 1  # processes per node (the most of any node)
    # Processes on each node, where they differ or come from a hostfile / the launcher that
    # started the run; [] means `num_processes` on one node.
    node_processes: list[int] = Field(default_factory=list)
    hostfile: Path | None = None
    launcher: Launcher = "deepspeed"
    # The launcher that already started every process of this run (each one runs
    # `genos train` and builds this plan itself), or None: genos starts them.
    launched_by: cluster.Source | None = None
    total_steps: int
    resume: bool = False
    resume_from: Path | None = None  # a specific checkpoint (step directory); None: the latest
    init_from: InitSource | None = None  # weights a new run starts from (fresh optimizer)
    stop_after: int | None = None  # steps this invocation runs before stopping (resumable)
    smoke_test: bool = False
    eval_iters: int = 8  # micro-batches per evaluation
    micro_batch: MicroBatchChoice | None = None  # set when genos chose the micro-batch
    wandb_project: str | None = None
    tensorboard: bool = False
    compile: bool | None = None  # None: the model's default for the device
    peak_tflops: float | None = None  # per-device peak for MFU; None: GPU table or CPU measured

    @property
    def micro_batch_size(self) -> int:
        return self.config.training.micro_batch_size

    @property
    def processes_per_node(self) -> list[int]:
        return self.node_processes or [self.num_processes]

    @property
    def nodes(self) -> int:
        return len(self.processes_per_node)

    @property
    def warmup_steps(self) -> int:
        """The configured warmup, at most a tenth of the run: a short run (a first try with
        --train-tokens) should not spend its whole length warming up."""
        return min(self.config.training.warmup_steps, max(1, self.total_steps // 10))

    @property
    def world_size(self) -> int:
        """Processes over all nodes."""
        return sum(self.processes_per_node)

    def grad_accum(self, world_size: int) -> int:
        """Micro-batches per rank per optimizer step for `world_size` data-parallel ranks."""
        return grad_accum(self.config.training, world_size)

    def write(self, path: Path) -> None:
        from genos_cli.atomic import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w") as fh:
            fh.write(self.model_dump_json(indent=2))

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


# `--test`: a smoke run that touches every part of training (forward, backward, optimizer
# step, logging, evaluation, a checkpoint) in seconds: 4 steps of one micro-batch of 2
# sequences per process (the preset's micro-batch if smaller), 2 micro-batches of evaluation.
SMOKE_TEST_STEPS = 4
SMOKE_TEST_MICRO_BATCH = 2
SMOKE_TEST_EVAL_ITERS = 2
# On CPUs a micro-batch of about this many tokens: the small preset (512-token sequences)
# trains as fast with 8 sequences as with its GPU-sized 64 (0.93-1.11x) at 1.1 GB peak
# memory instead of 4.0 GB; benchmarks/bench_cpu_micro_batch.py, docs/train.md.
CPU_MICRO_BATCH_TOKENS = 4096


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
    nodes: int | None = None
    hostfile: Path | None = None
    launcher: Launcher | None = None  # None: deepspeed, or none when already launched
    max_steps: int | None = None
    resume: bool = False
    resume_from: Path | None = None
    init_from: Path | None = None
    stop_after: int | None = None
    smoke_test: bool = False
    wandb_project: str | None = None
    tensorboard: bool = False
    compile: bool | None = None
    peak_tflops: float | None = None
    choose_micro_batch: bool = True  # False: the preset's even on a CPU (--engine megatron: GPUs)


def cache_root() -> Path:
    return cache_dir()


def hostfile_slots(hostfile: Path) -> list[tuple[str, int | None]]:
    """The hosts of a DeepSpeed-style hostfile and their slots (lines like 'node1 slots=8',
    # comments; a host without slots= gets None)."""
    if not hostfile.is_file():
        raise GenosError(f"hostfile {hostfile} does not exist")
    hosts: list[tuple[str, int | None]] = []
    for n, line in enumerate(hostfile.read_text().splitlines(), 1):
        words = line.split("#")[0].split()
        if not words:
            continue
        slots = [w for w in words[1:] if w.startswith("slots=")]
        try:
            count = int(slots[0].removeprefix("slots=")) if slots else None
        except ValueError:
            count = None
        if slots and (count is None or count < 1):
            raise GenosError(
                f"hostfile {hostfile}, line {n}: {slots[0]!r} is not a positive slot count"
            )
        hosts.append((words[0], count))
    if not hosts:
        raise GenosError(
            f"hostfile {hostfile} lists no hosts (expected lines like 'node1 slots=8')"
        )
    return hosts


def host_names(hostfile: Path) -> list[str]:
    """The hosts of a DeepSpeed-style hostfile, in order (the first is the rendezvous)."""
    return [name for name, _ in hostfile_slots(hostfile)]


@dataclass(frozen=True)
class Layout:
    """Where a run's processes are: how many on each node, who launches them."""

    num_processes: int  # per node (the most of any)
    node_processes: list[int]
    launcher: Launcher
    launched_by: cluster.Source | None


def _local_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def layout(opts: TrainOptions) -> Layout:
    """The processes of the run `opts` describes. Under torchrun / srun the launcher placed
    them (the environment says where); with a hostfile, DeepSpeed's launcher runs `slots`
    processes on each host (or --num-gpus on every host when given); with --nodes, the same
    number on each node; else --num-gpus (default: this machine's GPUs, or 1) here."""
    given = opts.num_processes
    if given is not None and given < 1:
        raise GenosError(f"--num-gpus must be at least 1, got {given}")
    if opts.nodes is not None and opts.nodes < 1:
        raise GenosError(f"--nodes must be at least 1, got {opts.nodes}")
    rank = cluster.detect()
    if rank is not None:
        return _launched_layout(opts, rank)
    launcher = opts.launcher or "deepspeed"
    if launcher == "slurm" and opts.hostfile is not None:
        raise GenosError("--hostfile is for DeepSpeed's launcher; SLURM places the processes")
    if opts.hostfile is not None and opts.nodes is not None:
        raise GenosError("use either --hostfile or --nodes: a hostfile lists the nodes")
    if opts.hostfile is not None:
        if launcher == "none":
            raise GenosError("--launcher none runs in this process: it takes no --hostfile")
        hosts = hostfile_slots(opts.hostfile)
        default = given or _local_devices()
        # DeepSpeed's --num_gpus N runs N on every host; without it, each host's slots.
        per_node = [given or slots or default for _, slots in hosts]
        if launcher == "torchrun" and len(set(per_node)) > 1:
            raise GenosError(
                "torchrun starts the same number of processes on every node, but the hostfile's "
                f"slots differ ({', '.join(map(str, per_node))}); use --launcher deepspeed or "
                "pass --num-gpus"
            )
        return Layout(max(per_node), per_node, launcher, None)
    nodes = opts.nodes or 1
    if nodes > 1 and launcher in ("deepspeed", "none"):
        raise GenosError(
            f"--nodes {nodes} needs --launcher slurm or torchrun (DeepSpeed's launcher takes "
            "its nodes from --hostfile)"
        )
    if launcher == "none" and given is not None and given > 1:
        raise GenosError(
            "--launcher none runs one process, this one; start several with torchrun or srun"
        )
    count = given or _local_devices()
    return Layout(count, [count] * nodes, launcher, None)


def _launched_layout(opts: TrainOptions, rank: cluster.RankEnv) -> Layout:
    """This process is one rank of a job torchrun / srun started: the environment's layout;
    options that would place processes otherwise are contradictions, refused."""
    who = "srun" if rank.source == "slurm" else "torchrun"
    if opts.hostfile is not None:
        raise GenosError(f"--hostfile places processes, but {who} already started them")
    if opts.launcher in ("deepspeed", "torchrun", "slurm") and opts.launcher != rank.source:
        raise GenosError(
            f"--launcher {opts.launcher}: this process is already a rank {who} started; "
            "leave --launcher out"
        )
    if opts.num_processes is not None and opts.num_processes != rank.local_world_size:
        raise GenosError(
            f"--num-gpus {opts.num_processes}, but {who} started {rank.local_world_size} "
            "processes on this node; leave --num-gpus out"
        )
    if opts.nodes is not None and opts.nodes != rank.nodes:
        raise GenosError(f"--nodes {opts.nodes}, but {who} started processes on {rank.nodes}")
    local = rank.local_world_size
    even = rank.world_size % local == 0
    per_node = [local] * (rank.world_size // local) if even else [rank.world_size]
    return Layout(local, per_node, rank.source, rank.source)


def auto_micro_batch(
    cfg: GenosConfig, world_size: int, *, device_type: str
) -> MicroBatchChoice | None:
    """The micro-batch to use when the user set none, or None to keep the preset's.

    Presets size micro-batches for GPUs. On a CPU a micro-batch of about
    CPU_MICRO_BATCH_TOKENS tokens trains as fast in a quarter of the memory (measured on the
    small preset, docs/train.md), so take the largest micro-batch up to that which divides
    each process's share of the global batch: the global batch, and with it the run's
    optimisation, stays the preset's; gradient accumulation makes up the difference.
    """
    if device_type != "cpu":
        return None
    t = cfg.training
    if t.global_batch_size % world_size:
        return None  # grad_accum reports it
    per_rank = t.global_batch_size // world_size
    cap = max(1, CPU_MICRO_BATCH_TOKENS // cfg.model.max_seq_length)
    size = max(d for d in range(1, min(cap, per_rank) + 1) if per_rank % d == 0)
    if size >= t.micro_batch_size:
        return None
    return MicroBatchChoice(size=size, preset=t.micro_batch_size, reason="sized for cpu")


def _device_type() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _config(opts: TrainOptions, world_size: int) -> tuple[GenosConfig, MicroBatchChoice | None]:
    """The run's config, with --test's budget and the automatic micro-batch applied."""
    overrides = dict(opts.overrides)
    micro_given = "training.micro_batch_size" in overrides
    fit = None if micro_given or opts.smoke_test else _micro_for_global(opts, overrides, world_size)
    if fit is not None:
        overrides["training.micro_batch_size"] = fit.size
    overrides.update(_settings_from_tokenizer(load_config(opts.size, opts.config, overrides)))
    if opts.smoke_test:
        preset = load_config(opts.size, opts.config, overrides).training.micro_batch_size
        micro = overrides.get("training.micro_batch_size", min(preset, SMOKE_TEST_MICRO_BATCH))
        overrides.update(
            {
                "training.micro_batch_size": micro,
                "training.global_batch_size": int(micro) * world_size,
                "training.log_interval": 1,
                "training.eval_interval": SMOKE_TEST_STEPS,
                "training.save_interval": SMOKE_TEST_STEPS,
                "training.warmup_steps": 1,
            }
        )
    cfg = load_config(opts.size, opts.config, overrides)
    # A micro-batch the user chose (flag, --set, their config file) or --test's stays.
    if micro_given or opts.config is not None or opts.smoke_test or not opts.choose_micro_batch:
        return cfg, fit
    choice = auto_micro_batch(cfg, world_size, device_type=_device_type())
    if choice is None:
        return cfg, fit
    if fit is not None:
        choice = choice.model_copy(update={"preset": fit.preset})
    overrides["training.micro_batch_size"] = choice.size
    return load_config(opts.size, opts.config, overrides), choice


def _micro_for_global(
    opts: TrainOptions, overrides: dict[str, Any], world_size: int
) -> MicroBatchChoice | None:
    """A global batch given without a micro-batch that the preset's micro-batch does not
    divide (`--global-batch-size 16` with the small preset's 64): the largest micro-batch up
    to the preset's that divides each process's share, so any global batch works."""
    given = overrides.get("training.global_batch_size")
    if given is None or opts.config is not None:  # a config file's micro-batch is the user's
        return None
    rest = {k: v for k, v in overrides.items() if k != "training.global_batch_size"}
    preset = load_config(opts.size, None, rest).training.micro_batch_size
    total = int(given)
    if total < 1 or total % world_size:
        return None  # validation reports it
    share = total // world_size
    if share % preset == 0:
        return None
    size = max(d for d in range(1, min(preset, share) + 1) if share % d == 0)
    return MicroBatchChoice(size=size, preset=preset, reason="fits the global batch")


def _settings_from_tokenizer(cfg: GenosConfig) -> dict[str, Any]:
    """Settings the run's tokenizer file decides: its vocabulary (a `--tokenizer-model` of
    another size than the config's `tokenizer.vocab_size`), from which an unset
    `model.vocab_size` follows when the config is validated again, and the fragment length
    that `data.sequence_length_bp: auto` means (resolved once, here, so the plan, the data
    cache and checkpoints record a number, and `genos eval` cuts FASTA the same way)."""
    from genos_cli.data.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer.kind, cfg.tokenizer.model_path)
    settings: dict[str, Any] = {}
    if tokenizer.vocab_size != cfg.tokenizer.vocab_size:
        settings["tokenizer.vocab_size"] = tokenizer.vocab_size
    if cfg.data.sequence_length_bp == "auto":
        resolved = cfg.data.resolved_for(cfg.model.max_seq_length, tokenizer)
        settings["data.sequence_length_bp"] = resolved.sequence_length_bp
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
        with _locked(prefix.parent / ".prepare.lock"):
            if not Path(f"{prefix}.json").is_file():  # another process may have made it
                _prepare_default_data(cfg, prefix)
    return prefix


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created): the processes of a torchrun / srun run, or two
    `genos train` at once, prepare the cached genome once, not over each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _prepare_default_data(cfg: GenosConfig, prefix: Path) -> None:
    from genos_cli.data.pipeline import PreprocessSettings, make_plan, run
    from genos_cli.data.sources import default_genome_path

    d = cfg.data
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


def _check_flags(opts: TrainOptions) -> None:
    """Options that contradict each other, refused before any work."""
    if opts.init_from is not None and (opts.resume or opts.resume_from is not None):
        raise GenosError(
            "use either --init-from (a new run from a checkpoint's weights) or --resume "
            "(continue a run with its optimizer and step), not both"
        )
    if opts.launcher is not None and opts.launcher not in LAUNCHERS:
        raise GenosError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got {opts.launcher}")


def build_plan(opts: TrainOptions, *, dry_run: bool = False) -> TrainPlan:
    from genos_cli.data.prepared import check_tokenizer_matches, check_vocab_fits, resolve_data
    from genos_cli.data.tokenizers import load_tokenizer

    _check_flags(opts)
    where = layout(opts)
    cfg, micro = _config(opts, sum(where.node_processes))
    if opts.wandb_project:
        extras.check("wandb")
    if opts.tensorboard:
        extras.check("tensorboard")
    tokenizer = load_tokenizer(cfg.tokenizer.kind, cfg.tokenizer.model_path)
    init = None if opts.init_from is None else resolve_init_source(opts.init_from, cfg, tokenizer)
    parts = _Parts(cfg, opts, where, micro, init)

    data_paths: list[Path | str] = list(opts.data_paths or cfg.data.train_data_paths)
    val_paths: list[Path | str] = list(opts.val_data_paths or cfg.data.val_data_paths)
    if not data_paths:
        data_paths = [_default_data(cfg, prepare=not dry_run)]
        if dry_run and not Path(f"{data_paths[0]}.json").is_file():
            return _plan(parts, [Path(f"{data_paths[0]}_train_text_document")],
                         [Path(f"{data_paths[0]}_val_text_document")])  # fmt: skip
    spec = resolve_data(data_paths, val_paths or None)
    check_tokenizer_matches(spec.tokenizer, tokenizer)
    check_vocab_fits(spec, cfg.model.resolved_vocab_size)
    return _plan(parts, list(spec.train), list(spec.val))


@dataclass(frozen=True)
class _Parts:
    """What `build_plan` resolved before the data: config, options, layout, choices."""

    cfg: GenosConfig
    opts: TrainOptions
    where: Layout
    micro: MicroBatchChoice | None
    init: InitSource | None


def _plan(parts: _Parts, train: list[Path], val: list[Path]) -> TrainPlan:
    cfg, opts, where = parts.cfg, parts.opts, parts.where
    output_dir = opts.output_dir or runs_dir() / cfg.name
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
    resume_from = None
    if opts.resume_from is not None:
        resume_from = check_resume_source(opts.resume_from, cfg)
    plan = TrainPlan(
        config=cfg,
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        train_prefixes=train,
        val_prefixes=val,
        tokenizer_kind=cfg.tokenizer.kind,
        tokenizer_model=cfg.tokenizer.model_path,
        num_processes=where.num_processes,
        node_processes=where.node_processes if len(where.node_processes) > 1 else [],
        hostfile=opts.hostfile,
        launcher=where.launcher,
        launched_by=where.launched_by,
        total_steps=steps,
        resume=opts.resume or resume_from is not None,
        resume_from=resume_from,
        init_from=parts.init,
        stop_after=opts.stop_after,
        smoke_test=opts.smoke_test,
        eval_iters=SMOKE_TEST_EVAL_ITERS if opts.smoke_test else 8,
        micro_batch=parts.micro,
        wandb_project=opts.wandb_project,
        tensorboard=opts.tensorboard,
        # --test: compiling takes longer than the smoke run itself (unless asked for).
        compile=False if opts.smoke_test and opts.compile is None else opts.compile,
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
    if plan.resume and plan.resume_from is None and not has_run:
        raise GenosError(
            f"--resume: no complete checkpoint in {plan.checkpoint_dir} to continue from"
        )
    if not plan.resume and has_run:
        raise GenosError(
            f"{plan.output_dir} already holds a run with checkpoints in {plan.checkpoint_dir}; "
            "pass --resume to continue it, or --output-dir for a new run"
        )
