"""The training loop: one `Trainer` per rank, small methods, DeepSpeed kept in `engine`.

`Trainer.train()` = resume (optional) → estimate time → for each step: `train_step()`
(micro-batches through the engine, one optimizer step) → log / evaluate / save.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genos_cli.data.tokenizers import load_tokenizer
from genos_cli.errors import GenosError
from genos_cli.metrics.peak import cpu_peak_flops, gpu_peak_flops, mfu
from genos_cli.model import build_model
from genos_cli.model.flops import model_flops_per_token
from genos_cli.train import checkpoint, engine
from genos_cli.train.data import (
    PackedTokenDataset,
    ShardedBatches,
    bases_per_token,
    bits_per_base,
    to_micro_batch,
)
from genos_cli.train.plan import TrainPlan
from genos_cli.train.records import LOG_NAME, GpuUtilisation, JsonlLog, memory_mb
from genos_cli.train.schedule import cosine_lr


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    final_loss: float | None
    val_loss: float | None
    val_bits_per_base: float | None
    checkpoint: str | None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, plan: TrainPlan, view: Any | None = None) -> None:
        self.plan = plan
        self.cfg = plan.config
        self.dist = engine.init_distributed()
        self.is_main = self.dist.rank == 0
        self.view = view if self.is_main else None
        self.precision = engine.resolve_precision(self.cfg.training.precision, self.dist.device)
        self.grad_accum = plan.grad_accum(self.dist.world_size)
        seq = self.cfg.model.max_seq_length

        seed_everything(self.cfg.training.seed)
        self.tokenizer = load_tokenizer(plan.tokenizer_kind, plan.tokenizer_model)
        self.train_data = PackedTokenDataset(plan.train_prefixes, seq, self.cfg.training.seed)
        model = build_model(self.cfg.model, compile=plan.compile, device=self.dist.device)
        self.micro_seconds = self._time_micro_batch(model)
        self.engine = engine.initialize(model, plan, self.grad_accum, self.precision, self.dist)
        self.batches = ShardedBatches(
            self.train_data,
            self.cfg.training.micro_batch_size,
            grad_accum=self.grad_accum,
            dp_rank=self.dist.rank,
            dp_world_size=self.dist.world_size,
        )
        self.val_data = None
        if plan.val_prefixes:
            try:
                self.val_data = PackedTokenDataset(plan.val_prefixes, seq, self.cfg.training.seed)
            except GenosError as exc:  # e.g. a validation split too small for one sample
                self.say(f"no evaluation: {exc}")
        micro = self.cfg.training.micro_batch_size
        if self.val_data is not None and len(self.val_data) < micro * self.dist.world_size:
            self.say(
                f"validation data holds {len(self.val_data)} samples, fewer than one "
                f"micro-batch per process ({micro} x {self.dist.world_size}): no evaluation"
            )
            self.val_data = None
        self.bases = torch.from_numpy(bases_per_token(self.tokenizer)).to(self.dist.device)

        self.step = 0
        self.tokens_seen = 0
        self.nan_streak = 0  # steps skipped in a row for a non-finite loss or gradient
        self.nan_skipped = 0  # steps skipped in this invocation
        self.last_eval: dict[str, Any] | None = None
        self.flops_per_token = model_flops_per_token(self.cfg.model, seq)
        self.peak_flops = self._peak_flops()
        self.gpu = GpuUtilisation(self.dist.local_rank) if self.dist.device.type == "cuda" else None
        self.log = JsonlLog(plan.output_dir / LOG_NAME) if self.is_main else None
        self.wandb = engine.maybe_wandb(plan, self.is_main)

    # -- setup helpers ----------------------------------------------------------------------

    def _peak_flops(self) -> float | None:
        """Peak FLOP/s of one device (MFU's denominator): --peak-tflops, else the GPU table
        entry for the device's name and dtype, else this CPU's measured matmul peak."""
        if self.plan.peak_tflops is not None:
            return self.plan.peak_tflops * 1e12
        if self.dist.device.type == "cuda":
            return gpu_peak_flops(torch.cuda.get_device_name(self.dist.device), self.precision)
        return cpu_peak_flops(torch.get_num_threads())

    def say(self, text: str) -> None:
        if self.view is not None:
            self.view.message(text)

    # -- the loop ---------------------------------------------------------------------------

    def train(self) -> TrainResult:
        if self.plan.resume:
            self.resume()
        start_step, start_time = self.step, time.perf_counter()
        total = self.plan.total_steps
        if self.plan.stop_after is not None:
            total = min(total, start_step + self.plan.stop_after)
        if self.step < total:
            self.estimate_time()
        window: dict[str, Any] = self._new_window()
        last_loss = None
        while self.step < total:
            metrics = self.train_step()
            if not metrics["skipped"]:
                last_loss = metrics["loss"]
            self._accumulate(window, metrics)
            self.step += 1
            if self.step % self.cfg.training.log_interval == 0 or self.step == total:
                self.log_window(window, start_step, start_time)
                window = self._new_window()
            if self.val_data is not None and (
                self.step % self.cfg.training.eval_interval == 0 or self.step == total
            ):
                self.evaluate()
            if self.step % self.cfg.training.save_interval == 0 or self.step == total:
                self.save()
        if self.step < self.plan.total_steps:
            self.say(f"stopped after step {self.step:,}; continue with --resume")
        result = TrainResult(
            steps=self.step,
            tokens=self.tokens_seen,
            seconds=time.perf_counter() - start_time,
            final_loss=last_loss,
            val_loss=self.last_eval.get("val_loss") if self.last_eval else None,
            val_bits_per_base=self.last_eval.get("val_bits_per_base") if self.last_eval else None,
            checkpoint=_optional_str(checkpoint.latest(self.plan.checkpoint_dir)),
        )
        if self.log is not None:
            self.log.close()
        if self.wandb is not None:
            self.wandb.finish()  # flush its history now, not at interpreter exit
        engine.barrier()
        return result

    def train_step(self) -> dict[str, Any]:
        """Forward/backward every micro-batch of this rank, then one optimizer step."""
        lr = cosine_lr(
            self.step,
            lr=self.cfg.training.lr,
            min_lr=self.cfg.training.min_lr,
            warmup_steps=self.plan.warmup_steps,
            total_steps=self.plan.total_steps,
        )
        engine.set_lr(self.engine, lr)
        t0 = time.perf_counter()
        sums = torch.zeros(4, dtype=torch.float64)  # loss, lm, aux, z
        counts = None
        skipped_before = engine.skipped_steps(self.engine)
        own_norm, dropped = None, False  # genos's gradient check (ZeRO 0, fp32 only)
        for micro in self.batches.batches(self.step):
            input_ids = micro.input_ids.to(self.dist.device, non_blocking=True)
            labels = micro.labels.to(self.dist.device, non_blocking=True)
            out = self.engine(input_ids, labels=labels)
            self.engine.backward(out.loss)
            norm, dropped = engine.micro_step(self.engine, self.cfg.training.expert_parallel_size)
            own_norm = norm if norm is not None else own_norm
            sums += (
                torch.stack(
                    [
                        out.loss.detach(),
                        out.lm_loss.detach(),
                        out.aux_loss.detach(),
                        out.z_loss.detach(),
                    ]
                )
                .double()
                .cpu()
            )
            c = out.expert_counts.detach().cpu()
            counts = c if counts is None else counts + c
        sums /= self.grad_accum
        sums = engine.all_reduce_mean(sums)
        assert counts is not None
        counts = engine.all_reduce_sum(counts.double())
        loss = float(sums[0])
        norm = own_norm if own_norm is not None else engine.grad_norm(self.engine)
        skipped = dropped or engine.skipped_steps(self.engine) > skipped_before
        self._check_finite(loss, norm, skipped)
        tokens = self.cfg.training.global_batch_size * self.cfg.model.max_seq_length
        self.tokens_seen += tokens
        return {
            "loss": loss,
            "lm_loss": float(sums[1]),
            "aux_loss": float(sums[2]),
            "z_loss": float(sums[3]),
            "lr": lr,
            "grad_norm": norm,
            "skipped": self.nan_streak > 0,
            "seconds": time.perf_counter() - t0,
            "tokens": tokens,
            "expert_counts": counts,
        }

    def _check_finite(self, loss: float, norm: float | None, skipped: bool) -> None:
        """The numerical-fault policy (`training.on_nan`), from numbers already on the host.

        A non-finite loss or gradient norm (fp16: loss only; its loss scaler skips overflowing
        steps by design) stops the run with `stop`. With `skip` the step's update must not
        have been applied (DeepSpeed's ZeRO optimizer skips it; without ZeRO
        `engine.micro_step` does): a warning is logged and training goes on, until
        MAX_NAN_SKIPS steps in a row were skipped. Either way nothing non-finite is saved.
        """
        bad_norm = norm is not None and not math.isfinite(norm) and self.precision != "fp16"
        if math.isfinite(loss) and not bad_norm:
            self.nan_streak = 0
            return
        step = self.step + 1
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
        policy = self.cfg.training.on_nan
        if policy == "stop":
            raise GenosError(
                f"non-finite {what} at step {step}; training stopped before saving, so every "
                "checkpoint holds finite weights (lower --lr, check the data, or pass "
                "--on-nan skip to skip such steps)"
            )
        if not skipped:
            raise GenosError(
                f"non-finite {what} at step {step}, and the optimizer applied the step, so it "
                "cannot be skipped; training stopped before saving (continue from the last "
                "checkpoint with --resume)"
            )
        self.nan_streak += 1
        self.nan_skipped += 1
        record = {
            "type": "warning",
            "step": step,
            "event": "non_finite",
            "message": f"non-finite {what} at step {step}: update skipped (--on-nan skip)",
            "loss": _json_number(loss),
            "grad_norm": None if norm is None else _json_number(norm),
            "skipped_steps": self.nan_skipped,
            "time": time.time(),
        }
        if self.log is not None:
            self.log.write(record)
        self.say(f"[yellow]warning:[/] {record['message']}")
        if self.nan_streak >= MAX_NAN_SKIPS:
            first = step - self.nan_streak + 1
            raise GenosError(
                f"{self.nan_streak} steps in a row ({first} to {step}) had a non-finite loss "
                f"or gradients and were skipped; training stopped with the weights of step "
                f"{first - 1} (lower --lr or check the data)"
            )

    # -- metrics ----------------------------------------------------------------------------

    @staticmethod
    def _new_window() -> dict[str, Any]:
        return {"steps": 0, "seconds": 0.0, "tokens": 0, "counts": None, "last": None}

    @staticmethod
    def _accumulate(window: dict[str, Any], metrics: dict[str, Any]) -> None:
        window["steps"] += 1
        window["seconds"] += metrics["seconds"]
        window["tokens"] += metrics["tokens"]
        c = metrics["expert_counts"]
        window["counts"] = c if window["counts"] is None else window["counts"] + c
        if not metrics["skipped"]:  # a skipped step's numbers are in its warning record
            window["last"] = metrics

    def log_window(self, window: dict[str, Any], start_step: int, start_time: float) -> None:
        last = window["last"]
        if last is None:  # every step of the window was skipped (non-finite)
            return
        tokens_per_s = window["tokens"] / max(window["seconds"], 1e-9)
        elapsed = time.perf_counter() - start_time
        steps_done = self.step - start_step
        eta = elapsed / steps_done * (self.plan.total_steps - self.step) if steps_done else None
        mem_now, mem_peak = memory_mb(self.dist.device.type)
        counts = window["counts"]
        load = (counts / counts.sum(dim=1, keepdim=True).clamp(min=1)).tolist()
        record = {
            "type": "train",
            "step": self.step,
            "total_steps": self.plan.total_steps,
            "tokens": self.tokens_seen,
            "loss": last["loss"],
            "lm_loss": last["lm_loss"],
            "aux_loss": last["aux_loss"],
            "z_loss": last["z_loss"],
            "lr": last["lr"],
            "grad_norm": last["grad_norm"],
            "tokens_per_s": tokens_per_s,
            "samples_per_s": tokens_per_s / self.cfg.model.max_seq_length,
            "mfu": mfu(
                tokens_per_s,
                self.flops_per_token,
                self.peak_flops * self.dist.world_size if self.peak_flops else None,
            ),
            # What MFU was computed from, so `genos metrics` can recompute it for another peak.
            "flops_per_token": self.flops_per_token,
            "peak_flops": self.peak_flops,
            "mem_current_mb": mem_now,
            "mem_peak_mb": mem_peak,
            "gpu_util": self.gpu.read() if self.gpu else None,
            "expert_load": load,
            "elapsed_s": elapsed,
            "eta_s": eta,
            "world_size": self.dist.world_size,
            "time": time.time(),
        }
        self._emit(record)

    def _emit(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(record)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "type"}, step=record["step"])
        if self.view is not None:
            if record["type"] == "train":
                self.view.train_record(record)
            else:
                self.view.eval_record(record)

    # -- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Loss and bits per base on the first `eval_iters` micro-batches of the validation
        split, shared out over the ranks: the same windows every time and whatever the number
        of processes, so evaluations compare across steps and runs."""
        assert self.val_data is not None
        module = self.engine.module
        module.eval()
        micro, world = self.cfg.training.micro_batch_size, self.dist.world_size
        # Every rank runs the same number of full micro-batches: with experts sharded, each
        # forward is a collective (all-to-all) that all ranks must join.
        n_batches = min(max(self.plan.eval_iters, world), len(self.val_data) // micro)
        n_batches -= n_batches % world
        starts = np.arange(n_batches) * micro
        mine = starts[self.dist.rank :: world]
        totals = torch.zeros(3, dtype=torch.float64)  # nll (nats), tokens, bases
        for start in mine.tolist():
            idx = np.arange(start, start + micro)
            batch = to_micro_batch(self.val_data.samples(idx))
            input_ids = batch.input_ids.to(self.dist.device)
            labels = batch.labels.to(self.dist.device)
            with engine.autocast(self.dist.device, self.precision):
                logits = module(input_ids).logits
            nll = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
            )
            totals += torch.stack(
                [
                    nll.double().cpu(),
                    torch.tensor(float(labels.numel())),
                    self.bases[labels].sum().double().cpu(),
                ]
            )
        module.train()
        totals = engine.all_reduce_sum(totals)
        nll, tokens, bases = (float(v) for v in totals)
        record = {
            "type": "eval",
            "step": self.step,
            "val_loss": nll / max(tokens, 1),
            "val_bits_per_base": bits_per_base(nll, bases) if bases > 0 else float("nan"),
            "val_tokens": int(tokens),
            "val_bases": int(bases),
            "time": time.time(),
        }
        self.last_eval = record
        self._emit(record)
        return record

    # -- time estimate ----------------------------------------------------------------------

    def _time_micro_batch(self, model: torch.nn.Module) -> float:
        """Seconds of forward+backward for one micro-batch, on the bare model before the
        engine wraps it (no optimizer step; gradients cleared; weights untouched)."""
        micro = self.cfg.training.micro_batch_size
        batch = to_micro_batch(self.train_data.samples(np.arange(micro)))
        input_ids = batch.input_ids.to(self.dist.device)
        labels = batch.labels.to(self.dist.device)
        timings = []
        for _ in range(2):  # the first absorbs one-off costs (allocation, compilation)
            if self.dist.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with engine.autocast(self.dist.device, self.precision):
                out = model(input_ids, labels=labels)
            out.loss.backward()
            if self.dist.device.type == "cuda":
                torch.cuda.synchronize()
            timings.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
        return timings[-1]

    def estimate_time(self) -> None:
        """Say how long the rest of the run will take, from the measured micro-batch time."""
        per_step = self.micro_seconds * self.grad_accum
        remaining = self.plan.total_steps - self.step
        seconds = per_step * remaining
        tokens = remaining * self.cfg.tokens_per_step
        processes = f"{self.dist.world_size} {self.dist.device.type} process" + (
            "es" if self.dist.world_size > 1 else ""
        )
        self.say(
            f"estimated training time: {_human(seconds)} for {remaining:,} steps "
            f"({tokens / 1e6:,.1f}M tokens at ~{self.cfg.tokens_per_step / per_step:,.0f} "
            f"tokens/s, {processes})"
        )
        if seconds > 3600:
            self.say(
                "[yellow]that is long: pass --train-tokens or --max-steps for a shorter run[/]"
            )

    # -- checkpoints ------------------------------------------------------------------------

    def save(self) -> None:
        state = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "data": self.batches.state_dict(),
            "rng": checkpoint.rng_state(),
            "last_eval": self.last_eval,
        }
        path = checkpoint.save(
            self.engine, self.plan, self.step, state, is_main=self.is_main, tokenizer=self.tokenizer
        )
        self.say(f"saved checkpoint {path}")

    def resume(self) -> None:
        state = checkpoint.load_latest(self.engine, self.plan)
        if state is None:
            self.say("no checkpoint to resume from: starting from scratch")
            return
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.batches.load_state_dict(state["data"])
        checkpoint.set_rng_state(state["rng"])
        self.last_eval = state.get("last_eval")
        self.say(f"resumed from step {self.step:,}")


MAX_NAN_SKIPS = 10  # with --on-nan skip, this many skipped steps in a row stop the run


def _json_number(value: float) -> float | str:
    """Non-finite floats as "nan" / "inf" / "-inf": strict JSON has no NaN."""
    return value if math.isfinite(value) else str(value)


def _optional_str(value: object | None) -> str | None:
    return None if value is None else str(value)


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
