"""The Megatron-LM command: every flag exists in Megatron-LM's argument parser, values parse,
and they describe the genos preset (model, tokenizer, data, schedule)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pytest

from genos_cli.config import load_config
from genos_cli.errors import GenosError
from genos_cli.train.megatron import (
    LaunchCommand,
    MegatronRun,
    pretrain_gpt_args,
    torchrun_launcher,
)

FLAGS_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "megatron_flags.txt"
# Flags genos emits that take no value (store_true / store_false in arguments.py).
SWITCHES = {
    "--group-query-attention", "--swiglu", "--disable-bias-linear",
    "--untie-embeddings-and-output-weights", "--moe-grouped-gemm", "--bf16", "--fp16",
}  # fmt: skip


def megatron_flags() -> set[str]:
    lines = FLAGS_FILE.read_text().splitlines()
    return {ln.strip() for ln in lines if ln.startswith("--")}


def make_run(
    tmp_path: Path, *, kind: str = "bpe", val: bool = True, gpu: bool = True, world: int = 1,
    wandb: str | None = None, **overrides: object,
) -> MegatronRun:  # fmt: skip
    from genos_cli.data.tokenizers import default_tokenizer_path

    if kind == "nucleotide":
        overrides.update({"tokenizer.kind": "nucleotide", "tokenizer.vocab_size": 16})
    cfg = load_config("small", overrides=overrides)
    return MegatronRun(
        config=cfg,
        train_prefixes=[tmp_path / "a_train_text_document", tmp_path / "b_train_text_document"],
        val_prefixes=[tmp_path / "a_val_text_document"] if val else [],
        tokenizer_kind=kind,
        tokenizer_model=default_tokenizer_path() if kind == "bpe" else None,
        world_size=world,
        train_iters=cfg.train_steps,
        warmup_iters=cfg.training.warmup_steps,
        eval_samples=8 * cfg.training.micro_batch_size,
        checkpoint_dir=tmp_path / "ckpt",
        output_dir=tmp_path,
        gpu=gpu,
        wandb_project=wandb,
    )


def variants(tmp_path: Path) -> list[MegatronRun]:
    return [
        make_run(tmp_path),
        make_run(tmp_path, kind="nucleotide", val=False, gpu=False),
        make_run(tmp_path, world=4, wandb="genos-test",
                 **{"training.expert_parallel_size": 2, "model.z_loss_coeff": 1e-3,
                    "training.precision": "fp16"}),
    ]  # fmt: skip


def parse(args: list[str]) -> dict[str, list[str]]:
    """flag -> its values, checking that only switches come without a value."""
    out: dict[str, list[str]] = {}
    flag = None
    for word in args:
        if word.startswith("--"):
            flag = word
            assert flag not in out, f"{flag} given twice"
            out[flag] = []
        else:
            assert flag is not None
            out[flag].append(word)
    for flag, values in out.items():
        assert bool(values) != (flag in SWITCHES), f"{flag} {values}"
    return out


def test_every_flag_exists_in_megatron_lm(tmp_path: Path) -> None:
    known = megatron_flags()
    assert len(known) > 350 and "--num-experts" in known  # the vendored list is whole
    for run in variants(tmp_path):
        used = set(parse(pretrain_gpt_args(run)))
        assert used - known == set()


def test_values_parse_as_megatron_types(tmp_path: Path) -> None:
    ints = ["--num-layers", "--hidden-size", "--num-attention-heads", "--num-query-groups",
            "--kv-channels", "--seq-length", "--max-position-embeddings", "--rotary-base",
            "--num-experts", "--moe-router-topk", "--ffn-hidden-size", "--moe-ffn-hidden-size",
            "--micro-batch-size", "--global-batch-size", "--train-iters", "--lr-warmup-iters",
            "--lr-decay-iters", "--seed", "--eval-iters", "--eval-interval", "--log-interval",
            "--save-interval", "--make-vocab-size-divisible-by"]  # fmt: skip
    floats = ["--lr", "--min-lr", "--weight-decay", "--clip-grad", "--adam-beta1",
              "--adam-beta2", "--adam-eps", "--norm-epsilon", "--init-method-std",
              "--moe-aux-loss-coeff", "--attention-dropout", "--hidden-dropout"]  # fmt: skip
    args = parse(pretrain_gpt_args(make_run(tmp_path)))
    for flag in ints:
        int(args[flag][0])
    for flag in floats:
        float(args[flag][0])


def test_the_command_is_the_genos_preset(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    cfg = run.config
    args = parse(pretrain_gpt_args(run))
    m, t = cfg.model, cfg.training
    assert args["--num-layers"] == [str(m.num_layers)]
    assert args["--num-query-groups"] == [str(m.num_query_groups)]
    assert args["--num-experts"] == [str(m.num_experts)]
    assert args["--moe-router-topk"] == ["2"]
    assert args["--moe-ffn-hidden-size"] == [str(m.expert_ffn_hidden_size)]
    assert args["--position-embedding-type"] == ["rope"]
    assert args["--normalization"] == ["RMSNorm"]
    assert args["--rotary-base"] == ["10000"]
    assert args["--attention-dropout"] == args["--hidden-dropout"] == ["0.0"]
    assert args["--train-iters"] == ["611"] == args["--lr-decay-iters"]  # 160M / (512 x 512)
    assert args["--lr-decay-style"] == ["cosine"]
    assert float(args["--lr"][0]) == t.lr and float(args["--min-lr"][0]) == t.min_lr
    assert args["--global-batch-size"] == ["512"] and args["--micro-batch-size"] == ["64"]
    assert args["--eval-iters"] == [str(math.ceil(8 * 64 / 512))]
    assert args["--tokenizer-type"] == ["GPTSentencePieceTokenizer"]
    assert Path(args["--tokenizer-model"][0]).is_file()
    assert args["--make-vocab-size-divisible-by"] == [str(m.vocab_size)]
    assert args["--train-data-path"] == [str(p) for p in run.train_prefixes]
    assert args["--valid-data-path"] == [str(p) for p in run.val_prefixes]
    assert "--bf16" in args and "--moe-grouped-gemm" in args
    assert args["--distributed-backend"] == ["nccl"]


def test_nucleotide_cpu_and_expert_parallel_variants(tmp_path: Path) -> None:
    nuc, ep = variants(tmp_path)[1:]
    args = parse(pretrain_gpt_args(nuc))
    # NullTokenizer's vocabulary is --vocab-size + 1 = the nucleotide tokenizer's 16 ids.
    assert args["--tokenizer-type"] == ["NullTokenizer"] and args["--vocab-size"] == ["15"]
    assert args["--split"] == ["100,0,0"] and args["--eval-iters"] == ["0"]
    assert "--bf16" not in args and "--moe-grouped-gemm" not in args  # gpu=False
    assert args["--distributed-backend"] == ["gloo"]
    args = parse(pretrain_gpt_args(ep))
    assert args["--expert-model-parallel-size"] == ["2"]
    assert args["--moe-token-dispatcher-type"] == ["alltoall"]
    assert args["--moe-z-loss-coeff"] == ["0.001"] and "--fp16" in args
    assert args["--wandb-project"] == ["genos-test"]


def test_runs_megatron_cannot_express_are_refused(tmp_path: Path) -> None:
    with pytest.raises(GenosError, match="integer rope_base"):
        pretrain_gpt_args(make_run(tmp_path, **{"model.rope_base": 10000.5}))
    with pytest.raises(GenosError, match="must divide"):
        pretrain_gpt_args(make_run(tmp_path, world=3, **{"training.expert_parallel_size": 2}))
    with pytest.raises(GenosError, match="not a multiple"):
        pretrain_gpt_args(make_run(tmp_path, world=3))


def test_torchrun_flags_exist(tmp_path: Path) -> None:
    from torch.distributed.run import get_args_parser

    hostfile = tmp_path / "hosts"
    hostfile.write_text("# nodes\nnode1 slots=8\nnode2 slots=8\n")
    for launcher in (torchrun_launcher(8, None), torchrun_launcher(8, hostfile)):
        argv = [w.replace("${NODE_RANK}", "1") for w in launcher[1:]] + ["pretrain_gpt.py"]
        ns = get_args_parser().parse_args(argv)
        assert ns.nproc_per_node == "8" and ns.training_script == "pretrain_gpt.py"
    assert (ns.nnodes, ns.master_addr, ns.node_rank) == ("2", "node1", 1)


def test_shell_form_round_trips(tmp_path: Path) -> None:
    import shlex

    args = pretrain_gpt_args(make_run(tmp_path))
    cmd = LaunchCommand(torchrun_launcher(2, None), "/opt/Megatron-LM/pretrain_gpt.py", args)
    words = shlex.split(cmd.shell().replace("\\\n", " "))
    assert words == ["CUDA_DEVICE_MAX_CONNECTIONS=1", *cmd.argv]


def test_the_real_parser_accepts_the_command(tmp_path: Path) -> None:
    """Megatron-LM's own parser, when a clone is importable (MEGATRON_LM_PATH)."""
    import os

    root = os.environ.get("MEGATRON_LM_PATH")
    if root:
        sys.path.insert(0, root)
    try:
        from megatron.training.arguments import add_megatron_arguments
    except ImportError:
        pytest.skip("Megatron-LM (megatron.training) is not importable; set MEGATRON_LM_PATH")
    finally:
        if root:
            sys.path.remove(root)
    for run in variants(tmp_path):
        parser = add_megatron_arguments(argparse.ArgumentParser(allow_abbrev=False))
        ns = parser.parse_args(pretrain_gpt_args(run))
        assert ns.num_experts == run.config.model.num_experts
        assert ns.num_query_groups == run.config.model.num_query_groups


def test_vocabulary_follows_the_tokenizer_unless_set(tmp_path: Path) -> None:
    """The model's vocabulary is the tokenizer's (128 BPE, 16 nucleotide: NullTokenizer's
    15 + 1) unless the config sets one; Megatron pads its embedding to exactly that."""
    bpe = parse(pretrain_gpt_args(make_run(tmp_path)))
    nuc = parse(pretrain_gpt_args(make_run(tmp_path, kind="nucleotide")))
    wide_run = make_run(tmp_path, kind="nucleotide", **{"model.vocab_size": 64})
    wide = parse(pretrain_gpt_args(wide_run))
    assert bpe["--make-vocab-size-divisible-by"] == ["128"]
    assert nuc["--make-vocab-size-divisible-by"] == ["16"] and nuc["--vocab-size"] == ["15"]
    assert wide["--make-vocab-size-divisible-by"] == ["64"]


def test_moe_loss_weights_reach_megatron(tmp_path: Path) -> None:
    default = parse(pretrain_gpt_args(make_run(tmp_path)))
    assert default["--moe-aux-loss-coeff"] == ["0.01"]
    assert "--moe-z-loss-coeff" not in default  # 0 = off = Megatron's default (None)
    tuned = make_run(tmp_path, **{"model.aux_loss_coeff": 1e-3, "model.z_loss_coeff": 1e-4})
    args = parse(pretrain_gpt_args(tuned))
    assert args["--moe-aux-loss-coeff"] == ["0.001"]
    assert args["--moe-z-loss-coeff"] == ["0.0001"]
