"""A genos run as a Megatron-LM `pretrain_gpt.py` command (the reference training path).

`pretrain_gpt_args` maps a genos config, its data prefixes, tokenizer and world size to the
flags that build the same model and schedule in Megatron-LM (flag names from
megatron/training/arguments.py; tests/train/test_megatron.py checks each against it):

- model: Mixtral-style MoE decoder = `--num-experts --moe-router-topk
  --moe-ffn-hidden-size` (dropless: no capacity factor), GQA = `--group-query-attention
  --num-query-groups`, RoPE = `--position-embedding-type rope --rotary-base`, SwiGLU =
  `--swiglu`, RMSNorm = `--normalization RMSNorm`, no biases, untied embeddings, no dropout.
  Megatron's default router (softmax over the top-k logits) equals genos's softmax -> top-k ->
  renormalise; `--moe-router-dtype fp32` keeps it in fp32 as genos does.
- data: the `.bin/.idx` prefixes `genos preprocess` wrote, as `--train-data-path` /
  `--valid-data-path` (genos splits at preprocessing time; Megatron's `--split` is used only
  when there is no validation set).
- tokenizer: BPE = `GPTSentencePieceTokenizer` on the SentencePiece model (the GPT variant
  keeps the model's ids and vocabulary; plain `SentencePieceTokenizer` appends <CLS>, <SEP>,
  <EOD>, <MASK> pieces). Nucleotide = `NullTokenizer --vocab-size 15`: Megatron's tokenizer
  for pre-tokenized data, whose vocabulary is the given size + 1 (its EOD id, 15, is a
  reserved id genos never writes; genos's own EOD ids are already in the data, and none of
  Megatron's EOD-dependent options is used). `--make-vocab-size-divisible-by` is the genos
  model's vocab size so the embedding has exactly genos's rows.
- schedule: `--train-iters` = genos's step count (train_tokens / tokens per step), linear
  warmup then cosine to `--min-lr`, AdamW settings, clipping, bf16 on GPUs.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from genos_cli.errors import GenosError
from genos_cli.train.plan import grad_accum, host_names

if TYPE_CHECKING:
    from genos_cli.config import GenosConfig
    from genos_cli.train.plan import TrainPlan

MEGATRON_ENV = "MEGATRON_LM_PATH"
PRETRAIN_SCRIPT = "pretrain_gpt.py"
INSTALL_HINT = (
    "Megatron-LM is not installed: git clone https://github.com/NVIDIA/Megatron-LM, "
    f"set {MEGATRON_ENV} to the clone (or pass --megatron-path), and install its "
    "requirements (a CUDA build of PyTorch, megatron-core, Transformer Engine)"
)
NULL_TOKENIZER_VOCAB = 15  # NullTokenizer's vocabulary is this + 1 (its EOD id) = genos's 16


@dataclass(frozen=True)
class MegatronRun:
    """Everything the Megatron-LM command depends on (see `from_plan`)."""

    config: GenosConfig
    train_prefixes: Sequence[Path]
    val_prefixes: Sequence[Path]
    tokenizer_kind: str
    tokenizer_model: Path | None  # the SentencePiece model (BPE)
    world_size: int
    train_iters: int
    warmup_iters: int
    eval_samples: int  # sequences per evaluation (genos: eval_iters micro-batches)
    checkpoint_dir: Path
    output_dir: Path
    gpu: bool = True
    wandb_project: str | None = None


def from_plan(plan: TrainPlan, world_size: int, *, gpu: bool = True) -> MegatronRun:
    from genos_cli.data.tokenizers import default_tokenizer_path

    model = plan.tokenizer_model
    if plan.tokenizer_kind == "bpe" and model is None:
        model = default_tokenizer_path()
    return MegatronRun(
        config=plan.config,
        # Absolute paths: the command may be run from the Megatron-LM checkout.
        train_prefixes=[Path(p).resolve() for p in plan.train_prefixes],
        val_prefixes=[Path(p).resolve() for p in plan.val_prefixes],
        tokenizer_kind=plan.tokenizer_kind,
        tokenizer_model=Path(model).resolve() if model is not None else None,
        world_size=world_size,
        train_iters=plan.total_steps,
        warmup_iters=plan.warmup_steps,
        eval_samples=plan.eval_iters * plan.micro_batch_size,
        checkpoint_dir=plan.checkpoint_dir.resolve(),
        output_dir=plan.output_dir.resolve(),
        gpu=gpu,
        wandb_project=plan.wandb_project,
    )


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _model_args(cfg: GenosConfig) -> list[str]:
    m = cfg.model
    if not float(m.rope_base).is_integer():
        # Megatron parses --rotary-base as an int.
        raise GenosError(f"Megatron-LM needs an integer rope_base, got {m.rope_base}")
    args = [
        "--num-layers", str(m.num_layers),
        "--hidden-size", str(m.hidden_size),
        "--num-attention-heads", str(m.num_attention_heads),
        "--group-query-attention",
        "--num-query-groups", str(m.num_query_groups),
        "--kv-channels", str(m.head_dim),
        "--seq-length", str(m.max_seq_length),
        "--max-position-embeddings", str(m.max_seq_length),
        "--position-embedding-type", "rope",
        "--rotary-base", str(int(m.rope_base)),
        "--rotary-percent", "1.0",
        "--normalization", "RMSNorm",
        "--norm-epsilon", _number(m.norm_eps),
        "--swiglu",
        "--disable-bias-linear",
        "--untie-embeddings-and-output-weights",
        "--attention-dropout", "0.0",  # Megatron's default is 0.1; genos has no dropout
        "--hidden-dropout", "0.0",
        "--init-method-std", _number(m.init_std),
        # Mixture of experts: every layer, top-k, dropless, GShard/Switch aux loss.
        "--num-experts", str(m.num_experts),
        "--moe-router-topk", str(m.moe_router_topk),
        "--ffn-hidden-size", str(m.expert_ffn_hidden_size),
        "--moe-ffn-hidden-size", str(m.expert_ffn_hidden_size),
        "--moe-router-load-balancing-type", "aux_loss",
        "--moe-aux-loss-coeff", _number(m.aux_loss_coeff),
        "--moe-router-dtype", "fp32",
    ]  # fmt: skip
    if m.z_loss_coeff > 0:
        args += ["--moe-z-loss-coeff", _number(m.z_loss_coeff)]
    return args


def _tokenizer_args(run: MegatronRun) -> list[str]:
    vocab = run.config.model.resolved_vocab_size
    if run.tokenizer_kind == "bpe":
        if run.tokenizer_model is None:
            raise GenosError("a BPE run needs its SentencePiece model for Megatron-LM")
        args = ["--tokenizer-type", "GPTSentencePieceTokenizer",
                "--tokenizer-model", str(run.tokenizer_model)]  # fmt: skip
    elif run.tokenizer_kind == "nucleotide":
        args = ["--tokenizer-type", "NullTokenizer", "--vocab-size", str(NULL_TOKENIZER_VOCAB)]
    else:
        raise GenosError(f"unknown tokenizer kind {run.tokenizer_kind!r}")
    # Megatron pads its vocabulary up to a multiple of this (x tensor-parallel size, 1 here):
    # padding to genos's model.vocab_size gives the embedding exactly genos's rows.
    return [*args, "--make-vocab-size-divisible-by", str(vocab)]


def _data_args(run: MegatronRun) -> list[str]:
    train = [str(p) for p in run.train_prefixes]
    if not train:
        raise GenosError("no training data for Megatron-LM")
    if run.val_prefixes:
        return ["--train-data-path", *train,
                "--valid-data-path", *(str(p) for p in run.val_prefixes)]  # fmt: skip
    return ["--data-path", *train, "--split", "100,0,0"]


def _training_args(run: MegatronRun) -> list[str]:
    t = run.config.training
    # Megatron counts an evaluation in global batches; genos in micro-batches.
    eval_iters = math.ceil(run.eval_samples / t.global_batch_size) if run.val_prefixes else 0
    args = [
        "--micro-batch-size", str(t.micro_batch_size),
        "--global-batch-size", str(t.global_batch_size),
        "--train-iters", str(run.train_iters),
        "--lr", _number(t.lr),
        "--min-lr", _number(t.final_lr),
        "--lr-decay-style", "cosine",
        "--lr-warmup-iters", str(run.warmup_iters),
        "--lr-decay-iters", str(run.train_iters),
        "--weight-decay", _number(t.weight_decay),
        "--clip-grad", _number(t.grad_clip),
        "--adam-beta1", _number(t.adam_beta1),
        "--adam-beta2", _number(t.adam_beta2),
        "--adam-eps", _number(t.adam_eps),
        "--seed", str(t.seed),
        "--tensor-model-parallel-size", "1",
        "--pipeline-model-parallel-size", "1",
        "--expert-model-parallel-size", str(t.expert_parallel_size),
        "--distributed-backend", "nccl" if run.gpu else "gloo",
        "--log-interval", str(t.log_interval),
        "--eval-interval", str(t.eval_interval),
        "--eval-iters", str(eval_iters),
        "--save-interval", str(t.save_interval),
        "--save", str(run.checkpoint_dir),
        "--load", str(run.checkpoint_dir),
    ]  # fmt: skip
    if t.expert_parallel_size > 1:
        args += ["--moe-token-dispatcher-type", "alltoall"]  # Megatron's advice for EP
    if run.gpu:
        args.append("--moe-grouped-gemm")  # one grouped GEMM for a rank's experts (CUDA)
    precision = t.precision if t.precision != "auto" else ("bf16" if run.gpu else "fp32")
    if precision in ("bf16", "fp16"):
        args.append(f"--{precision}")
    if run.wandb_project:
        args += ["--wandb-project", run.wandb_project,
                 "--wandb-exp-name", run.config.name,
                 "--wandb-save-dir", str(run.output_dir / "wandb")]  # fmt: skip
    return args


def pretrain_gpt_args(run: MegatronRun) -> list[str]:
    """The arguments of Megatron-LM's `pretrain_gpt.py` that train genos's model on genos's
    data with genos's schedule (see the module docstring)."""
    t = run.config.training
    if run.world_size < 1:
        raise GenosError(f"the world size must be at least 1, got {run.world_size}")
    grad_accum(t, run.world_size)  # the batch and expert-parallel sizes fit the processes
    return _model_args(run.config) + _tokenizer_args(run) + _data_args(run) + _training_args(run)


# -- launching ---------------------------------------------------------------------------


def find_pretrain_script(megatron_path: Path | None) -> Path | None:
    """`pretrain_gpt.py` of the Megatron-LM clone named by `megatron_path` or
    $MEGATRON_LM_PATH; None when neither is set; a GenosError when the one named lacks it."""
    root = megatron_path
    if root is None and os.environ.get(MEGATRON_ENV):
        root = Path(os.environ[MEGATRON_ENV])
    if root is None:
        return None
    script = root / PRETRAIN_SCRIPT
    if not script.is_file():
        raise GenosError(
            f"{root} has no {PRETRAIN_SCRIPT}; point --megatron-path or {MEGATRON_ENV} at a "
            "clone of https://github.com/NVIDIA/Megatron-LM"
        )
    return script.resolve()


@dataclass(frozen=True)
class LaunchCommand:
    """`launcher script args`: torchrun, Megatron-LM's `pretrain_gpt.py`, its arguments."""

    launcher: list[str]
    script: str
    args: list[str]

    @property
    def argv(self) -> list[str]:
        return [*self.launcher, self.script, *self.args]

    def shell(self) -> str:
        """A copy-pasteable shell command, one flag (with its values) per line."""
        lines = ["CUDA_DEVICE_MAX_CONNECTIONS=1 " + " ".join(map(_quote, self.launcher))]
        lines.append(_quote(self.script))
        for word in self.args:
            if word.startswith("--"):
                lines.append(word)
            else:
                lines[-1] += " " + _quote(word)
        return " \\\n    ".join(lines)


def _quote(word: str) -> str:
    return word if word.startswith("${") else shlex.quote(word)  # ${VAR}: left to the shell


def torchrun_launcher(nproc_per_node: int, hostfile: Path | None) -> list[str]:
    """`torchrun` starting `nproc_per_node` ranks here, or on every host of the hostfile
    (the same command runs on each node, with that node's NODE_RANK)."""
    cmd = ["torchrun", "--nproc-per-node", str(nproc_per_node)]
    if hostfile is None:
        return [*cmd, "--standalone"]
    names = host_names(hostfile)  # the first is the rendezvous node
    return [*cmd, "--nnodes", str(len(names)), "--node-rank", "${NODE_RANK}",
            "--master-addr", names[0], "--master-port", "29500"]  # fmt: skip


def plan_command(plan: TrainPlan, megatron_path: Path | None) -> tuple[LaunchCommand, Path | None]:
    """The launch command for a checked genos plan, and the `pretrain_gpt.py` it runs
    (None when Megatron-LM is not found: the command then names ${MEGATRON_LM_PATH})."""
    if len(set(plan.processes_per_node)) > 1:
        raise GenosError(
            "torchrun (Megatron-LM's launcher) starts the same number of processes on every "
            f"node; the hostfile's slots differ ({', '.join(map(str, plan.processes_per_node))}); "
            "pass --num-gpus"
        )
    script = find_pretrain_script(megatron_path)
    # Megatron-LM trains on NVIDIA GPUs: the command is for them (bf16, grouped GEMM, NCCL).
    args = pretrain_gpt_args(from_plan(plan, plan.world_size, gpu=True))
    target = str(script) if script is not None else f"${{{MEGATRON_ENV}}}/{PRETRAIN_SCRIPT}"
    launcher = torchrun_launcher(plan.num_processes, plan.hostfile)
    return LaunchCommand(launcher, target, args), script


def run(cmd: LaunchCommand, megatron_root: Path) -> int:
    """Run the command (torchrun as `python -m torch.distributed.run` of this interpreter, so
    with the torch genos uses) with Megatron-LM importable."""
    import subprocess

    env = dict(os.environ)
    env.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(megatron_root), env.get("PYTHONPATH")]))
    node_rank = env.get("NODE_RANK", "0")
    argv = [sys.executable, "-m", "torch.distributed.run"]
    argv += [node_rank if word == "${NODE_RANK}" else word for word in cmd.argv[1:]]
    return subprocess.run(argv, env=env, check=False).returncode
