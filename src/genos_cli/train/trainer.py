"""The training loop: one `Trainer` per rank, in small methods; DeepSpeed stays in `Runtime`.

`Trainer.train()` = resume (optional) → estimate time → for each step: `train_step()`
(`forward_backward()` over the rank's micro-batches, one optimizer step, a `StepMetrics`)
→ log (`TrainRecord`) / evaluate (`EvalRecord`) / save.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from genos_cli.checkpoint import latest
from genos_cli.checkpoint import training as checkpoints
from genos_cli.config.schema import MAX_NAN_SKIPS
from genos_cli.data.bases import bases_per_token, bits_per_base
from genos_cli.data.documents import read_documents
from genos_cli.data.packed import PackedTokenDataset
from genos_cli.data.score_windows import window_batches
from genos_cli.data.tokenizers import load_tokenizer
from genos_cli.errors import GenosError
from genos_cli.model import build_model
from genos_cli.model.flops import model_flops_per_token
from genos_cli.model.losses import nll_sums
from genos_cli.telemetry.format import duration
from genos_cli.telemetry.peak import cpu_peak_flops, gpu_peak_flops, mfu
from genos_cli.telemetry.records import EvalRecord, TrainRecord, WarningRecord, json_number
from genos_cli.telemetry.system import gpu_utilisation_sampler, memory_mb
from genos_cli.train.batches import MicroBatch, ShardedBatches
from genos_cli.train.init_from import InitSource, load_initial_weights
from genos_cli.train.loggers import RunLog
from genos_cli.train.runtime import Runtime
from genos_cli.train.schedule import cosine_lr

if TYPE_CHECKING:
    from genos_cli.train.live_view import TrainingView
    from genos_cli.train.plan import TrainPlan


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    final_loss: float | None
    val_loss: float | None
    val_bits_per_base: float | None
    checkpoint: str | None


@dataclass
class StepMetrics:
    """One optimizer step. The numbers stay on the device (reading them would make the host
    wait for the GPU every step); a log interval reads the last step's once."""

    losses: torch.Tensor  # (4,) float64: loss, lm, aux, z, means over all ranks' micro-batches
    grad_norm: torch.Tensor | float | None
    lr: float
    skipped: bool  # a non-finite step whose update was dropped (--on-nan skip)
    tokens: int  # all ranks
    expert_counts: torch.Tensor  # (L, E) float64: routes per expert, all ranks

    @property
    def loss(self) -> float:
        return float(self.losses[0])  # a host sync: for tests and the closing summary


@dataclass
class LogWindow:
    """The steps since the last train record: what it covers, on the device."""

    start: float = field(default_factory=time.perf_counter)
    steps: int = 0
    tokens: int = 0
    counts: torch.Tensor | None = None  # (L, E)
    last: StepMetrics | None = None  # the last step that was not skipped
    # Steps whose loss was not finite although the optimizer applied them (checked when the
    # window is read, not every step): the first such step, or -1.
    first_bad_step: torch.Tensor | None = None

    def add(self, m: StepMetrics, step: int) -> None:
        self.steps += 1
        self.tokens += m.tokens
        self.counts = m.expert_counts if self.counts is None else self.counts + m.expert_counts
        if m.skipped:  # a skipped step's numbers are in its warning record
            return
        self.last = m
        bad = ~torch.isfinite(m.losses[0])
        here = torch.where(bad, step, -1)
        self.first_bad_step = (
            here
            if self.first_bad_step is None
            else torch.where(self.first_bad_step >= 0, self.first_bad_step, here)
        )


@dataclass
class WindowNumbers:
    """A log window's device numbers, read to the host."""

    losses: list[float]  # loss, lm, aux, z of the window's last step
    counts: np.ndarray  # (L, E) routes per expert over the window
    grad_norm: float | None


@dataclass
class NanPolicy:
    """Counts of steps skipped for a non-finite loss or gradient (`training.on_nan`)."""

    streak: int = 0  # in a row
    skipped: int = 0  # in this invocation


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, plan: TrainPlan, view: TrainingView | None = None) -> None:
        self.plan = plan
        self.cfg = plan.config
        self.runtime = Runtime(plan)
        self.is_main = self.runtime.is_main
        self.view = view if self.is_main else None
        self.device = self.runtime.device
        self.grad_accum = self.runtime.grad_accum
        seq = self.cfg.model.max_seq_length

        seed_everything(self.cfg.training.seed)
        self.tokenizer = load_tokenizer(plan.tokenizer_kind, plan.tokenizer_model)
        self.train_data = PackedTokenDataset(plan.train_prefixes, seq, self.cfg.training.seed)
        model = build_model(self.cfg.model, compile=plan.compile, device=self.device)
        self.init_from = plan.init_from  # a resumed run takes its own from the checkpoint
        if plan.init_from is not None:
            load_initial_weights(model, plan.init_from)
        self.runtime.wrap(model)
        self.batches = ShardedBatches(
            self.train_data,
            self.cfg.training.micro_batch_size,
            grad_accum=self.grad_accum,
            dp_rank=self.runtime.dist.rank,
            dp_world_size=self.runtime.dist.world_size,
        )
        self.val_batches = self._validation_batches()
        self.bases = torch.from_numpy(bases_per_token(self.tokenizer)).to(self.device)

        self.step = 0
        self.tokens_seen = 0
        self.nan = NanPolicy()
        self.last_eval: EvalRecord | None = None
        self.flops_per_token = model_flops_per_token(self.cfg.model, seq)
        self.peak_flops = self._peak_flops()
        self.gpu = (
            gpu_utilisation_sampler(self.runtime.dist.local_rank)
            if self.device.type == "cuda"
            else None
        )
        self.log = RunLog(plan, self.is_main)

    # -- setup helpers ----------------------------------------------------------------------

    def _peak_flops(self) -> float | None:
        """Peak FLOP/s of one device (MFU's denominator): --peak-tflops, else the GPU table
        entry for the device's name and dtype, else this CPU's matmul peak, measured again
        (a second) at every start so that the cached best-ever figure keeps improving."""
        if self.plan.peak_tflops is not None:
            return self.plan.peak_tflops * 1e12
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
            return gpu_peak_flops(name, self.runtime.precision)
        return cpu_peak_flops(torch.get_num_threads(), refresh=True)

    def _validation_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's share of the first `eval_iters` micro-batches of validation windows,
        in `genos eval`'s windowing (`genos_cli.data.score_windows`), so the two report the
        same bits per base on the same data. Every rank gets as many batches: with experts
        sharded, each forward is a collective (all-to-all) that all ranks must join."""
        if not self.plan.val_prefixes:
            return []
        try:
            docs = read_documents(self.plan.val_prefixes)
        except GenosError as exc:
            self.say(f"no evaluation: {exc}")
            return []
        micro, world = self.cfg.training.micro_batch_size, self.runtime.dist.world_size
        context = self.cfg.model.max_seq_length
        wanted = max(self.plan.eval_iters, world)
        batches = list(itertools.islice(window_batches(docs.tokens, context, context, micro),
                                        wanted))  # fmt: skip
        usable = len(batches) - len(batches) % world
        if usable == 0:
            self.say(
                f"validation data holds {docs.tokens.size} tokens, less than one window per "
                f"process ({world}): no evaluation"
            )
            return []
        return batches[:usable][self.runtime.dist.rank :: world]

    def say(self, text: str) -> None:
        if self.view is not None:
            self.view.message(text)

    # -- the loop ---------------------------------------------------------------------------

    def header(self) -> None:
        """What this run starts from and the choices genos made for it, said once."""
        if self.plan.micro_batch is not None:
            t = self.cfg.training
            self.say(self.plan.micro_batch.describe(t.global_batch_size, self.grad_accum))
        if self.init_from is not None and not self.plan.resume:
            self.say(
                f"starting from the weights of {self.init_from.describe()} (step 0, fresh "
                "optimizer and schedule)"
            )

    def train(self) -> TrainResult:
        self.header()
        if self.plan.resume:
            self.resume()
        start_step, start_time = self.step, time.perf_counter()
        total = self.plan.total_steps
        if self.plan.stop_after is not None:
            total = min(total, start_step + self.plan.stop_after)
        last_loss = None
        t = self.cfg.training
        stream = self.batches.prefetched(self.step, pin_memory=self.device.type == "cuda")
        window = LogWindow()
        try:
            while self.step < total:
                _, micro_batches = next(stream)
                metrics = self.train_step(micro_batches)
                window.add(metrics, self.step + 1)
                if not metrics.skipped:
                    last_loss = metrics.losses[0]
                self.step += 1
                self._maybe_estimate(start_step)
                if self.step % t.log_interval == 0 or self.step == total:
                    self.log_window(window, start_step, start_time)
                    window = LogWindow()
                if self.val_batches and (self.step % t.eval_interval == 0 or self.step == total):
                    self.evaluate()
                if self.step % t.save_interval == 0 or self.step == total:
                    self._check_window(window)  # nothing non-finite is ever saved
                    self.save()
        finally:
            stream.close()
        if self.step < self.plan.total_steps:
            self.say(f"stopped after step {self.step:,}; continue with --resume")
        checkpoint = latest(self.plan.checkpoint_dir)
        result = TrainResult(
            steps=self.step,
            tokens=self.tokens_seen,
            seconds=time.perf_counter() - start_time,
            final_loss=None if last_loss is None else float(last_loss),
            val_loss=self.last_eval.val_loss if self.last_eval else None,
            val_bits_per_base=self.last_eval.val_bits_per_base if self.last_eval else None,
            checkpoint=None if checkpoint is None else str(checkpoint),
        )
        self.log.close()
        self.runtime.barrier()
        return result

    def lr_at(self, step: int) -> float:
        t = self.cfg.training
        return cosine_lr(
            step,
            lr=t.lr,
            min_lr=t.final_lr,
            warmup_steps=self.plan.warmup_steps,
            total_steps=self.plan.total_steps,
        )

    def train_step(self, micro_batches: list[MicroBatch] | None = None) -> StepMetrics:
        """Forward/backward every micro-batch of this rank, then one optimizer step. No host
        sync of genos's own unless DeepSpeed skipped the step (non-finite gradients)."""
        if micro_batches is None:
            micro_batches = self.batches.batches(self.step)
        lr = self.lr_at(self.step)
        self.runtime.set_lr(lr)
        skipped_before = self.runtime.skipped_steps()
        sums, counts, own_norm, dropped = self.forward_backward(micro_batches)
        losses = self.runtime.all_reduce_mean(sums / self.grad_accum)
        counts = self.runtime.all_reduce_sum(counts)
        norm = own_norm if own_norm is not None else self.runtime.grad_norm()
        skipped = dropped or self.runtime.skipped_steps() > skipped_before
        if skipped:
            self._skipped(losses, norm)
        else:
            self.nan.streak = 0
        tokens = self.cfg.tokens_per_step
        self.tokens_seen += tokens
        return StepMetrics(
            losses=losses,
            grad_norm=norm,
            lr=lr,
            skipped=skipped,
            tokens=tokens,
            expert_counts=counts,
        )

    def forward_backward(
        self, micro_batches: list[MicroBatch]
    ) -> tuple[torch.Tensor, torch.Tensor, float | None, bool]:
        """This rank's micro-batches through forward, backward and the runtime's step.
        Returns the summed (loss, lm, aux, z) (4,) and the expert counts (L, E), both
        float64 on the device, genos's own gradient norm (ZeRO 0, fp32 only) and whether
        genos dropped the update."""
        cfg = self.cfg.model
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # loss, lm, aux, z
        counts = torch.zeros(cfg.num_layers, cfg.num_experts, dtype=torch.float64,
                             device=self.device)  # fmt: skip
        own_norm, dropped = None, False
        for micro in micro_batches:
            input_ids = micro.input_ids.to(self.device, non_blocking=True)
            labels = micro.labels.to(self.device, non_blocking=True)
            out = self.runtime.forward(input_ids, labels)
            assert out.loss is not None and out.lm_loss is not None  # given labels, never None
            self.runtime.backward(out.loss)
            norm, dropped = self.runtime.step()
            own_norm = norm if norm is not None else own_norm
            losses = torch.stack([out.loss, out.lm_loss, out.aux_loss, out.z_loss]).detach()
            sums += losses.double()
            counts += out.expert_counts.detach().double()
        return sums, counts, own_norm, dropped

    def _skipped(self, losses: torch.Tensor, norm: torch.Tensor | float | None) -> None:
        """A step whose update was not applied: by DeepSpeed (its ZeRO / bf16 optimizers skip
        a step with non-finite gradients; fp16's loss scaler skips overflowing steps by
        design) or by `Runtime.step` (ZeRO 0, fp32). Apply `training.on_nan`: `stop` ends
        the run naming the step; `skip` logs a warning and goes on, until MAX_NAN_SKIPS
        steps in a row were skipped. Rare, so reading the numbers here costs nothing."""
        loss = float(losses[0])
        norm_value = None if norm is None else float(norm)
        if self.runtime.precision == "fp16" and math.isfinite(loss):
            return  # the loss scaler's own skip: expected, not a fault
        step = self.step + 1
        what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm_value}"
        if self.cfg.training.on_nan == "stop":
            raise GenosError(
                f"non-finite {what} at step {step}; training stopped before saving, so every "
                "checkpoint holds finite weights (lower --lr, check the data, or pass "
                "--on-nan skip to skip such steps)"
            )
        self.nan.streak += 1
        self.nan.skipped += 1
        record = WarningRecord(
            step=step,
            event="non_finite",
            message=f"non-finite {what} at step {step}: update skipped (--on-nan skip)",
            loss=json_number(loss),
            grad_norm=None if norm_value is None else json_number(norm_value),
            skipped_steps=self.nan.skipped,
            time=time.time(),
        )
        if self.log.jsonl is not None:
            self.log.jsonl.write(record)
        self.say(f"[yellow]warning:[/] {record.message}")
        if self.nan.streak >= MAX_NAN_SKIPS:
            first = step - self.nan.streak + 1
            raise GenosError(
                f"{self.nan.streak} steps in a row ({first} to {step}) had a non-finite loss "
                f"or gradients and were skipped; training stopped with the weights of step "
                f"{first - 1} (lower --lr or check the data)"
            )

    def _check_window(self, window: LogWindow) -> None:
        """A non-finite loss the optimizer did not skip (it applied the update) cannot be
        undone: stop, before anything is logged or saved."""
        if window.first_bad_step is None:
            return
        step = int(window.first_bad_step)
        if step >= 0:
            raise GenosError(
                f"non-finite loss at step {step}, and the optimizer applied the step, so it "
                "cannot be skipped; training stopped before saving (continue from the last "
                "checkpoint with --resume)"
            )

    # -- metrics ----------------------------------------------------------------------------

    def log_window(self, window: LogWindow, start_step: int, start_time: float) -> None:
        self._check_window(window)
        if window.last is None:  # every step of the window was skipped
            return
        numbers = self.read_window(window)
        # After that read the device has finished the window's work: its wall time is real.
        seconds = time.perf_counter() - window.start
        record = self.train_record(window, numbers, seconds, start_step, start_time)
        self.log.write(record)
        if self.view is not None:
            self.view.train_record(record)

    def read_window(self, window: LogWindow) -> WindowNumbers:
        """The window's device numbers on the host, in one transfer (one sync)."""
        last, counts = window.last, window.counts
        assert last is not None and counts is not None
        norm = last.grad_norm
        parts = [last.losses.reshape(-1), counts.reshape(-1)]
        if isinstance(norm, torch.Tensor):
            parts.append(norm.detach().reshape(-1))
        values = torch.cat([v.to(self.device, torch.float64) for v in parts]).tolist()
        layers, experts = counts.shape
        return WindowNumbers(
            losses=values[:4],
            counts=np.asarray(values[4 : 4 + layers * experts]).reshape(layers, experts),
            grad_norm=values[-1] if isinstance(norm, torch.Tensor) else norm,
        )

    def train_record(
        self,
        window: LogWindow,
        numbers: WindowNumbers,
        seconds: float,
        start_step: int,
        start_time: float,
    ) -> TrainRecord:
        """The record of a log window of `seconds` wall time, from its numbers."""
        assert window.last is not None
        loss, lm_loss, aux_loss, z_loss = numbers.losses
        counts = numbers.counts
        load = (counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)).tolist()
        world = self.runtime.dist.world_size
        tokens_per_s = window.tokens / max(seconds, 1e-9)
        elapsed = time.perf_counter() - start_time
        steps_done = self.step - start_step
        eta = elapsed / steps_done * (self.plan.total_steps - self.step) if steps_done else None
        mem_now, mem_peak = memory_mb(self.device.type)
        return TrainRecord(
            step=self.step,
            total_steps=self.plan.total_steps,
            tokens=self.tokens_seen,
            loss=loss,
            lm_loss=lm_loss,
            aux_loss=aux_loss,
            z_loss=z_loss,
            lr=window.last.lr,
            grad_norm=numbers.grad_norm,
            tokens_per_s=tokens_per_s,
            samples_per_s=tokens_per_s / self.cfg.model.max_seq_length,
            mfu=mfu(
                tokens_per_s,
                self.flops_per_token,
                self.peak_flops * world if self.peak_flops else None,
            ),
            # What MFU was computed from, so `genos metrics` can recompute it for another peak.
            flops_per_token=self.flops_per_token,
            peak_flops=self.peak_flops,
            mem_current_mb=mem_now,
            mem_peak_mb=mem_peak,
            gpu_util=self.gpu.utilisation() if self.gpu else None,
            expert_load=load,
            elapsed_s=elapsed,
            eta_s=eta,
            world_size=world,
            time=time.time(),
        )

    # -- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> EvalRecord:
        """Loss and bits per base on this rank's validation batches, summed over all ranks:
        the same windows every time and whatever the number of processes, so evaluations
        compare across steps and runs (and with `genos eval` on the same data)."""
        module = self.runtime.module
        module.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # see nll_sums
        for input_ids, labels in self.val_batches:
            with self.runtime.autocast():
                logits = module(input_ids.to(self.device)).logits
            sums += nll_sums(logits, labels.to(self.device), self.bases)
        module.train()
        nll, tokens, bases, base_nll = self.runtime.all_reduce_sum(sums).tolist()
        record = EvalRecord(
            step=self.step,
            val_loss=nll / max(tokens, 1),
            val_bits_per_base=bits_per_base(base_nll, bases) if bases > 0 else float("nan"),
            val_tokens=int(tokens),
            val_bases=int(bases),
            time=time.time(),
        )
        self.last_eval = record
        self.log.write(record)
        if self.view is not None:
            self.view.eval_record(record)
        return record

    # -- time estimate ----------------------------------------------------------------------

    def _maybe_estimate(self, start_step: int) -> None:
        """After this invocation's second step, say how long the rest will take: timed on
        the real path (the wrapped model, its precision, compiled, the optimizer step), from
        the second step, since the first pays for compilation and allocation."""
        done = self.step - start_step
        if done == 1:
            self._synchronize()
            self._timer = time.perf_counter()
        elif done == 2 and self.step < self.plan.total_steps:
            self._synchronize()
            self.estimate_time(time.perf_counter() - self._timer)

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def estimate_time(self, step_seconds: float) -> None:
        """Say how long the rest of the run will take at `step_seconds` per step."""
        remaining = self.plan.total_steps - self.step
        seconds = step_seconds * remaining
        tokens = remaining * self.cfg.tokens_per_step
        world = self.runtime.dist.world_size
        processes = f"{world} {self.device.type} process" + ("es" if world > 1 else "")
        self.say(
            f"estimated time to the end: {duration(seconds)} for {remaining:,} more steps "
            f"({tokens / 1e6:,.1f}M tokens at ~{self.cfg.tokens_per_step / step_seconds:,.0f} "
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
            "rng": checkpoints.rng_state(),
            "last_eval": None if self.last_eval is None else self.last_eval.model_dump(),
            "init_from": None if self.init_from is None else self.init_from.model_dump(mode="json"),
        }
        request = checkpoints.SaveRequest(
            directory=self.plan.checkpoint_dir,
            step=self.step,
            client_state=state,
            config=self.cfg,
            tokenizer=self.tokenizer,
            # Where the run's data lives, so `genos eval` can fit its baselines on it.
            data={
                "train": [str(p.resolve()) for p in self.plan.train_prefixes],
                "val": [str(p.resolve()) for p in self.plan.val_prefixes],
            },
            keep_last=self.cfg.training.keep_last_checkpoints,
            meta=(
                {"init_from": self.init_from.model_dump(mode="json")}
                if self.init_from is not None
                else {}
            ),
        )
        path = checkpoints.save(self.runtime, request)
        self.say(f"saved checkpoint {path}")

    def resume(self) -> None:
        if self.plan.resume_from is not None:
            state: dict | None = checkpoints.load(self.runtime, self.plan.resume_from)
        else:
            state = checkpoints.load_latest(self.runtime, self.plan.checkpoint_dir)
        if state is None:
            self.say("no checkpoint to resume from: starting from scratch")
            return
        init_from = state.get("init_from")
        if init_from is not None:
            self.init_from = InitSource.model_validate(init_from)
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.batches.load_state_dict(state["data"])
        checkpoints.set_rng_state(state["rng"])
        last_eval = state.get("last_eval")
        self.last_eval = None if last_eval is None else EvalRecord.model_validate(last_eval)
        where = f" ({self.plan.resume_from})" if self.plan.resume_from is not None else ""
        self.say(f"resumed from step {self.step:,}{where}")
