"""The typed run configuration: one pydantic model per concern, each checking itself.

Field descriptions are the documentation: `genos config show` prints them as YAML comments
and docs/config.md is generated from them (tests/config/test_config.py keeps it in sync).
Cross-field checks collect every problem they find and raise them together, one per line,
so a user fixing a config sees all of them at once.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from genos_cli.data.vocab import MAX_VOCAB_SIZE, NUCLEOTIDE_VOCAB_SIZE

if TYPE_CHECKING:
    from genos_cli.data.tokenizers import DNATokenizer
    from genos_cli.data.windows import WindowSpec

MAX_NAN_SKIPS = 10  # with on_nan: skip, this many skipped steps in a row stop the run

Precision = Literal["auto", "fp32", "bf16", "fp16"]
OnNan = Literal["stop", "skip"]

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_vocab_fits_uint16(value: int) -> int:
    if value > MAX_VOCAB_SIZE:
        raise ValueError(
            f"at most {MAX_VOCAB_SIZE} token ids fit in the uint16 data files, got {value}"
        )
    return value


# A vocabulary size: positive, and small enough for uint16 token ids.
VocabSize = Annotated[int, Field(gt=0), AfterValidator(_check_vocab_fits_uint16)]


def tenth(value: float) -> float:
    """`value` / 10 in decimal, as `value` is written: tenth(6e-4) is 6e-05, where the binary
    6e-4 / 10 is 5.9999999999999995e-05."""
    return float(Decimal(repr(value)) / 10)


def _raise_all(problems: list[str]) -> None:
    # One ValueError per validator is all pydantic allows; newlines let the error formatter
    # in presets.py print each problem as its own bullet.
    if problems:
        raise ValueError("\n".join(problems))


class _Section(BaseModel):
    # extra="forbid" is what turns a typo'd key into an error instead of a silent default.
    # protected_namespaces=(): `model_path` is a real setting, not a pydantic internal.
    model_config = ConfigDict(extra="forbid", validate_default=True, protected_namespaces=())


class ModelConfig(_Section):
    """The Mixture-of-Experts transformer (Mixtral-style: GQA attention, RoPE, SwiGLU experts)."""

    num_layers: int = Field(gt=0, description="Number of transformer blocks.")
    hidden_size: int = Field(gt=0, description="Width of the residual stream.")
    num_attention_heads: int = Field(gt=0, description="Query heads per attention layer.")
    num_query_groups: int = Field(
        gt=0,
        description="Key/value heads (grouped-query attention); divides num_attention_heads.",
    )
    num_experts: int = Field(gt=0, description="SwiGLU experts in each MoE layer.")
    moe_router_topk: int = Field(
        default=2, gt=0, description="Experts each token is routed to (top-k of the router)."
    )
    expert_ffn_hidden_size: int = Field(
        gt=0, description="Inner width of each expert's SwiGLU feed-forward network."
    )
    vocab_size: VocabSize | None = Field(
        default=None,
        description="Rows of the embedding and output head; unset: the tokenizer's vocabulary "
        "(tokenizer.vocab_size: 128 for the shipped BPE, 16 for 'nucleotide'); a value given "
        "must be at least that.",
    )
    max_seq_length: int = Field(
        default=512, gt=0, description="Context length in tokens (training sequence length)."
    )
    rope_base: float = Field(
        default=10000.0, gt=0, description="Base (theta) of the rotary position embedding."
    )
    norm_eps: float = Field(default=1e-5, gt=0, description="Epsilon of every RMSNorm.")
    aux_loss_coeff: float = Field(
        default=1e-2,
        ge=0,
        description="Weight of the load-balancing loss (Switch Transformer, Fedus et al. 2021).",
    )
    z_loss_coeff: float = Field(
        default=0.0,
        ge=0,
        description="Weight of the router z-loss (ST-MoE, Zoph et al. 2022); 0 turns it off.",
    )
    init_std: float = Field(
        default=0.02, gt=0, description="Standard deviation of the normal weight init."
    )

    @property
    def head_dim(self) -> int:
        """Width of one attention head (hidden_size / num_attention_heads)."""
        return self.hidden_size // self.num_attention_heads

    @property
    def resolved_vocab_size(self) -> int:
        """`vocab_size`, resolved: a run's config (`GenosConfig`) sets it from the tokenizer
        when unset, so only a bare `ModelConfig` built without one can lack it."""
        if self.vocab_size is None:
            raise ValueError(
                "model.vocab_size is unset: a run config takes it from its tokenizer; "
                "a model config on its own needs it"
            )
        return self.vocab_size

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        problems = []
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        elif self.head_dim % 2:
            problems.append(
                f"head_dim = hidden_size / num_attention_heads = {self.head_dim} must be even, "
                "because rotary embeddings rotate pairs of dimensions"
            )
        if self.num_attention_heads % self.num_query_groups:
            problems.append(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"num_query_groups ({self.num_query_groups})"
            )
        if self.moe_router_topk > self.num_experts:
            problems.append(
                f"moe_router_topk ({self.moe_router_topk}) must be between 1 and "
                f"num_experts ({self.num_experts})"
            )
        _raise_all(problems)
        return self


class TokenizerConfig(_Section):
    """How DNA text becomes token ids."""

    kind: Literal["bpe", "nucleotide"] = Field(
        default="bpe",
        description="'bpe': SentencePiece BPE over DNA; 'nucleotide': one token per base.",
    )
    model_path: Path | None = Field(
        default=None,
        description="SentencePiece .model file; unset: the BPE tokenizer shipped with genos.",
    )
    vocab_size: VocabSize = Field(
        default=128,
        description=f"Token ids the tokenizer uses; {NUCLEOTIDE_VOCAB_SIZE} for 'nucleotide'.",
    )

    @model_validator(mode="after")
    def _check_nucleotide(self) -> TokenizerConfig:
        problems = []
        if self.kind == "nucleotide":
            if self.vocab_size != NUCLEOTIDE_VOCAB_SIZE:
                problems.append(
                    f"vocab_size must be {NUCLEOTIDE_VOCAB_SIZE} for the nucleotide tokenizer, "
                    f"got {self.vocab_size}"
                )
            if self.model_path is not None:
                problems.append(
                    "model_path must be null for the nucleotide tokenizer (it has no model file)"
                )
        _raise_all(problems)
        return self


class DataConfig(_Section):
    """How genomes are cut into training sequences and split into train/validation."""

    # The default in one place (the presets do not repeat it): "auto" is a one-line change.
    sequence_length_bp: int | Literal["auto"] = Field(
        default="auto",
        description="Length of each DNA fragment (one document) in base pairs; 'auto': long "
        "enough to fill contexts_per_document training contexts (model.max_seq_length tokens "
        "at the tokenizer's bp per token), resolved when genos train or genos preprocess starts.",
    )
    contexts_per_document: float = Field(
        default=2.0,
        ge=1,
        description="With sequence_length_bp 'auto': a fragment spells this many contexts' "
        "worth of tokens, rounded up to a multiple of 64 bp; at least 1, so that a packed "
        "training sample rarely holds the end of one document and the start of another.",
    )
    stride_bp: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Start-to-start distance of fragments in bp; unset: the fragment length (no "
            "overlap). Smaller overlaps, larger skips bases."
        ),
    )
    min_length_bp: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Shortest fragment kept (e.g. at a contig's end); unset: the fragment length "
            "(shorter fragments are dropped)."
        ),
    )
    val_ratio: float = Field(
        default=0.02,
        ge=0,
        lt=1,
        description="Fraction of fragments held out for validation; 0 holds out none.",
    )
    split_seed: int = Field(
        default=1234, ge=0, description="Seed of the train/validation split (reproducible)."
    )
    append_eod: bool = Field(
        default=True,
        description="Append the end-of-document token after each fragment (Megatron --append-eod).",
    )
    reverse_complement: bool = Field(
        default=False,
        description="Also write every training fragment as its reverse complement (the other "
        "strand), at preprocess time. The validation split is drawn per fragment first and is "
        "never augmented, so it holds no reverse complement of a training fragment.",
    )
    train_data_paths: list[str] = Field(
        default_factory=list,
        description="Prepared data to train on (several are blended): `genos preprocess` -o "
        "prefixes (train and val splits via their manifest) or .bin/.idx prefixes; unset: the "
        "embedded E. coli genome.",
    )
    val_data_paths: list[str] = Field(
        default_factory=list,
        description="Validation data prefixes; unset: the validation splits of the training data.",
    )

    @field_validator("sequence_length_bp", mode="before")
    @classmethod
    def _length_or_auto(cls, value: object) -> object:
        # One message for both forms, instead of pydantic's one error per union member.
        if value == "auto":
            return value
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"must be a positive number of bp or 'auto', got {value!r}")
        return value

    @property
    def length_bp(self) -> int:
        """The fragment length in bp, once resolved (never 'auto' in a run's plan)."""
        if self.sequence_length_bp == "auto":
            raise ValueError(
                "data.sequence_length_bp is 'auto', which genos train and genos preprocess "
                "resolve from the tokenizer (auto_length_bp); this config was not resolved"
            )
        return self.sequence_length_bp

    def auto_length_bp(self, context_tokens: int, bp_per_token: float) -> int:
        """The length 'auto' means: `contexts_per_document` contexts of `context_tokens`
        tokens at `bp_per_token`, rounded up to a multiple of 64 bp."""
        bp = self.contexts_per_document * context_tokens * bp_per_token
        return 64 * max(1, math.ceil(bp / 64))

    def resolved_for(self, context_tokens: int, tokenizer: DNATokenizer) -> DataConfig:
        """This config with 'auto' replaced by the length it means for `tokenizer` (itself
        when the length is a number): what genos train records, for configs it did not make."""
        if self.sequence_length_bp != "auto":
            return self
        from genos_cli.data.context_fill import reference_bp_per_token

        length = self.auto_length_bp(context_tokens, reference_bp_per_token(tokenizer))
        return self.model_copy(update={"sequence_length_bp": length})

    @property
    def effective_stride_bp(self) -> int:
        """The stride actually used: stride_bp, or the fragment length when unset."""
        return self.length_bp if self.stride_bp is None else self.stride_bp

    @property
    def effective_min_length_bp(self) -> int:
        """The minimum fragment length actually used: min_length_bp, or the fragment length."""
        return self.length_bp if self.min_length_bp is None else self.min_length_bp

    def window_spec(self) -> WindowSpec:
        """The fragmenting these settings describe, as the data pipeline takes it."""
        from genos_cli.data.windows import WindowSpec  # numpy: not needed for --help

        return WindowSpec(self.length_bp, self.effective_stride_bp, self.effective_min_length_bp)

    @model_validator(mode="after")
    def _check_lengths(self) -> DataConfig:
        # stride > length is deliberately allowed: it subsamples a genome (skips bases).
        problems = []
        if (
            self.min_length_bp is not None
            and self.sequence_length_bp != "auto"
            and self.min_length_bp > self.sequence_length_bp
        ):
            problems.append(
                f"min_length_bp ({self.min_length_bp}) must not exceed "
                f"sequence_length_bp ({self.sequence_length_bp})"
            )
        _raise_all(problems)
        return self


class TrainingConfig(_Section):
    """Optimisation, precision, parallelism and checkpointing."""

    micro_batch_size: int = Field(
        gt=0, description="Sequences per process (GPU) in one forward/backward pass."
    )
    global_batch_size: int = Field(
        gt=0,
        description=(
            "Sequences per optimizer step over all processes; gradient accumulation makes up "
            "the rest."
        ),
    )
    train_tokens: int = Field(
        gt=0,
        description="Training length in tokens; steps = train_tokens / (global_batch_size x "
        "max_seq_length), rounded up.",
    )
    lr: float = Field(
        default=6e-4, gt=0, description="Peak learning rate (AdamW); min_lr defaults to lr / 10."
    )
    min_lr: float | None = Field(
        default=None,
        ge=0,
        description="Learning rate at the end of the cosine decay; unset: lr / 10.",
    )
    warmup_steps: int = Field(
        default=100,
        ge=0,
        description="Optimizer steps of linear warmup from 0 to lr before the cosine decay.",
    )
    weight_decay: float = Field(default=0.1, ge=0, description="AdamW decoupled weight decay.")
    adam_beta1: float = Field(default=0.9, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(default=0.95, ge=0, lt=1, description="AdamW beta2.")
    adam_eps: float = Field(default=1e-8, gt=0, description="AdamW epsilon.")
    grad_clip: float = Field(
        default=1.0, ge=0, description="Clip the global gradient norm to this; 0 turns it off."
    )
    precision: Precision = Field(
        default="auto",
        description="Compute precision; 'auto' = bf16 where the GPU supports it, else fp32.",
    )
    zero_stage: Literal[0, 1, 2] = Field(
        default=1,
        description="DeepSpeed ZeRO stage (0, 1 or 2; stage 3 does not support MoE).",
    )
    expert_parallel_size: int = Field(
        default=1, gt=0, description="Processes (GPUs) the experts of one layer are spread over."
    )
    seed: int = Field(default=1234, ge=0, description="Seed of model init and data order.")
    log_interval: int = Field(default=10, gt=0, description="Log metrics every this many steps.")
    eval_interval: int = Field(
        default=200, gt=0, description="Evaluate on validation data every this many steps."
    )
    save_interval: int = Field(
        default=500, gt=0, description="Save a checkpoint every this many steps."
    )
    keep_last_checkpoints: int = Field(
        default=3, gt=0, description="Checkpoints kept on disk; older ones are deleted."
    )
    on_nan: OnNan = Field(
        default="stop",
        description="A non-finite loss or gradient: 'stop' ends the run with an error naming "
        f"the step; 'skip' drops that step's update, logs a warning and goes on ({MAX_NAN_SKIPS} "
        "skipped steps in a row stop the run). Nothing non-finite is ever saved.",
    )

    @field_validator("zero_stage", mode="before")
    @classmethod
    def _reject_zero3(cls, value: object) -> object:
        # DeepSpeed's MoE layers only work with ZeRO stages 0-2 (DeepSpeed MoE tutorial);
        # say so instead of pydantic's generic "should be 0, 1 or 2".
        if isinstance(value, bool):  # YAML `yes`/`true` would otherwise pass as stage 1
            raise ValueError(f"expected 0, 1 or 2, got {str(value).lower()}")
        if value in (3, "3"):
            raise ValueError("ZeRO-3 does not support Mixture-of-Experts layers; use 0, 1 or 2")
        return value

    @property
    def final_lr(self) -> float:
        """The learning rate at the end of the decay: `min_lr`, resolved (never None once
        validated)."""
        assert self.min_lr is not None
        return self.min_lr

    @model_validator(mode="after")
    def _check_batches_and_lr(self) -> TrainingConfig:
        if self.min_lr is None:
            # Resolved once, here, so every reader (trainer, Megatron command) sees a number.
            self.min_lr = tenth(self.lr)
        problems = []
        if self.global_batch_size % self.micro_batch_size:
            problems.append(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"micro_batch_size ({self.micro_batch_size})"
            )
        if self.min_lr > self.lr:
            problems.append(f"min_lr ({self.min_lr:g}) must not exceed lr ({self.lr:g})")
        _raise_all(problems)
        return self


class GenosConfig(_Section):
    """A complete run: what to build (model, tokenizer), from what (data), and how (training)."""

    name: str = Field(description="Run name; labels the run directory, logs and checkpoints.")
    model: ModelConfig = Field(description="The Mixture-of-Experts transformer.")
    tokenizer: TokenizerConfig = Field(
        default_factory=TokenizerConfig, description="How DNA becomes token ids."
    )
    data: DataConfig = Field(
        default_factory=DataConfig, description="Fragmenting genomes and the validation split."
    )
    training: TrainingConfig = Field(
        description="Optimisation, precision, parallelism and checkpointing."
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        # The name becomes a directory name, so keep it to characters every filesystem accepts.
        if not _NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "must start with a letter or digit and contain only letters, digits, "
                f"'.', '_' or '-', got {value!r}"
            )
        return value

    @property
    def tokens_per_step(self) -> int:
        """Tokens consumed by one optimizer step (global batch x context length)."""
        return self.training.global_batch_size * self.model.max_seq_length

    @property
    def train_steps(self) -> int:
        """Optimizer steps needed to see `training.train_tokens` tokens (rounded up)."""
        return math.ceil(self.training.train_tokens / self.tokens_per_step)

    @model_validator(mode="after")
    def _check_across_sections(self) -> GenosConfig:
        if self.model.vocab_size is None:
            # Resolved once, here (like training.min_lr), so the plan, checkpoints, the HF
            # export and the Megatron command all see a number: an output layer exactly as
            # wide as the tokenizer (16 rows for the nucleotide tokenizer, not 128).
            self.model.vocab_size = self.tokenizer.vocab_size
        problems = []
        if self.tokenizer.vocab_size > self.model.vocab_size:
            problems.append(
                f"tokenizer.vocab_size ({self.tokenizer.vocab_size}) must not exceed "
                f"model.vocab_size ({self.model.vocab_size})"
            )
        if self.model.num_experts % self.training.expert_parallel_size:
            problems.append(
                f"training.expert_parallel_size ({self.training.expert_parallel_size}) must "
                f"divide model.num_experts ({self.model.num_experts})"
            )
        _raise_all(problems)
        return self
