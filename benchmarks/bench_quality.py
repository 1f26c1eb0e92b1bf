"""What genos learns for its compute: validation bits per base next to the order-10 Markov
baseline on exactly the same bases, one row per training lever, in one command.

    python benchmarks/bench_quality.py --out bq                    # every row, both parts
    python benchmarks/bench_quality.py --out bq --part ecoli --rows baseline,long-docs
    python benchmarks/bench_quality.py --out bq --tokens 20000000  # another budget
    python benchmarks/bench_quality.py --tiny --tokens 16384 --out /tmp/bq   # the harness itself

Each row trains the small preset (`genos train`, the README's earlier first run: global
batch 32, micro-batch 8, 512-bp documents) for `--tokens` tokens (default 2,000,000, that
run's budget) with one lever changed, or several (`combined`; `recipe` is the README's
first run now), then scores it with `genos eval RUN --json --both-strands`:
bits per base of the forward strand (the number training reports) and of both strands, each
next to the order-10 Markov model fitted on the row's training data and scored on the same
bases; delta = genos - Markov (negative: genos beats counting). Two parts:

- `ecoli`: the embedded E. coli genome, prepared with the row's data settings, evaluated on
  its validation split (2% of its documents). A row that changes the document length
  (`long-docs`, `combined`) draws its split over other documents, so its bases are not the
  baseline row's: compare the delta, which is on the same bases within a row.
- `cross`: trained on the five genomes of `--genomes` other than S. aureus, evaluated on
  S. aureus held out whole (its FASTA, cut as the row's data settings cut), against uniform
  (2.0) and the Markov model fitted on the same five genomes.

Rows are data (`ROWS`): a name, what it changes, and config settings given to `genos train`
as `--set` (and to `genos preprocess` through a config file, so data settings shape the
data). Data sets are prepared once per distinct data setting, before the runs, so the wall
time is training alone. `--out` keeps the data, the runs and `results.json`; a row already
in `results.json` (same part, settings, tokens, seed and --tiny) is not run again, so an
interrupted campaign resumes where it stopped. Rows take 10-30 minutes each at 2M tokens on
a loaded 2-core CPU: run it in the background and read the table at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GENOMES = REPO.parent / "shared" / "data" / "genomes"
HOLDOUT = "saureus"  # the genome held out whole in the cross-genome part
PARTS = ("ecoli", "cross")
# torch.distributed's rendezvous variables: a caller that ran genos in-process (a test
# session) holds its port; a run started from it must pick its own.
DIST_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Row:
    name: str
    what: str
    settings: Mapping[str, Any] = field(default_factory=dict)  # dotted config settings


# The README's first run before this benchmark: the small preset at global batch 32,
# micro-batch 8, 512-bp documents (then the default; now `auto` is).
BASELINE = {
    "training.global_batch_size": 32,
    "training.micro_batch_size": 8,
    "data.sequence_length_bp": 512,
}
ROWS = [
    Row(
        "baseline",
        "the earlier first run: small preset, global batch 32, micro-batch 8, 512-bp documents",
    ),
    Row("lr-2e-3", "peak learning rate 2e-3 (preset: 6e-4)", {"training.lr": 2e-3}),
    Row(
        "warmup-3",
        "3 warmup steps (preset: 50, capped at a tenth of the run)",
        {"training.warmup_steps": 3},
    ),
    Row(
        "batch-16",
        "global batch 16: twice the optimizer steps for the tokens",
        {"training.global_batch_size": 16},
    ),
    Row(
        "rc",
        "reverse-complement augmentation of the training split",
        {"data.reverse_complement": True},
    ),
    Row(
        "long-docs",
        "documents that fill the context: data.sequence_length_bp auto (2 contexts)",
        {"data.sequence_length_bp": "auto"},
    ),
    Row(
        "nucleotide",
        "one token per base (model vocabulary 16)",
        {"tokenizer.kind": "nucleotide", "tokenizer.vocab_size": 16},
    ),
    Row(
        "aux-1e-3",
        "load-balancing loss weight 1e-3 (now 0.01; the real Genos 1e-3)",
        {"model.aux_loss_coeff": 1e-3},
    ),
    Row("z-loss", "router z-loss weight 1e-3 (ST-MoE; now off)", {"model.z_loss_coeff": 1e-3}),
]
# The levers not measured to hurt so far (the nucleotide tokenizer did, at equal tokens).
COMBINED = ("lr-2e-3", "batch-16", "rc", "long-docs", "aux-1e-3", "z-loss")
# The README's first run now: long documents (the default) with its budget's batch and lr.
RECIPE = ("long-docs", "batch-16", "lr-2e-3")

# --tiny: a model small enough to check the harness on a CPU in a minute or two.
TINY = {
    "model.num_layers": 2,
    "model.hidden_size": 64,
    "model.num_attention_heads": 4,
    "model.num_query_groups": 2,
    "model.expert_ffn_hidden_size": 48,
    "model.max_seq_length": 128,
}
# Settings that change the prepared data (and so which data set a row trains on).
DATA_SECTIONS = ("data.", "tokenizer.")
DATA_MODEL_SETTINGS = ("model.max_seq_length",)  # 'auto' document lengths follow the context


def combined(name: str, parts: Sequence[str], rows: Sequence[Row] = ROWS) -> Row:
    """One row with the settings of several, applied in order."""
    by_name = {r.name: r for r in rows}
    settings: dict[str, Any] = {}
    for part in parts:
        settings.update(by_name[part].settings)
    return Row(name, " + ".join(parts), settings)


ALL_ROWS = [*ROWS, combined("combined", COMBINED), combined("recipe", RECIPE)]


def select_rows(spec: str | None, rows: Sequence[Row] = ALL_ROWS) -> list[Row]:
    """The rows `--rows a,b` names, in the order given (all rows when None)."""
    if not spec:
        return list(rows)
    by_name = {r.name: r for r in rows}
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown row {unknown[0]!r}; rows: {', '.join(by_name)}")
    return [by_name[n] for n in names]


def run_settings(row: Row, tiny: bool) -> dict[str, Any]:
    """Every setting of a row's run: the baseline's, the row's, and the tiny model's."""
    return {**BASELINE, **row.settings, **(TINY if tiny else {})}


def data_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that shape a row's prepared data."""
    return {
        k: v for k, v in settings.items() if k.startswith(DATA_SECTIONS) or k in DATA_MODEL_SETTINGS
    }


def key_of(settings: Mapping[str, Any]) -> str:
    text = json.dumps(dict(sorted(settings.items())), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def set_flags(settings: Mapping[str, Any]) -> list[str]:
    """`--set key=value` for each setting (values as YAML: JSON is YAML)."""
    flags: list[str] = []
    for key, value in settings.items():
        text = value if isinstance(value, str) else json.dumps(value)
        flags += ["--set", f"{key}={text}"]
    return flags


def config_yaml(settings: Mapping[str, Any]) -> str:
    """A config file (the small preset with `settings`), for `genos preprocess --config`."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = value
    return json.dumps({"base": "small", **nested}, indent=2) + "\n"  # JSON is YAML


# How bits per base is counted. Results counted another way are scored again (the run's
# checkpoint is kept), not reused: "eod-counted" included the NLL of predicting
# end-of-document ids, which spell no base; genos now leaves it out.
SCORING = "bases-only"


@dataclass
class Result:
    part: str
    row: str
    settings: dict[str, Any]
    tokens: int
    seed: int
    tiny: bool
    steps: int
    train_seconds: float
    eval_seconds: float
    bits_per_base: float  # forward strand, as training reports it
    markov: float | None  # order-10 Markov on the same bases
    both_strands: float  # each document and its reverse complement
    markov_both_strands: float | None
    bases: int  # bases scored on the forward strand
    sequence_length_bp: int  # the document length the run used ('auto' resolved)
    vocab_size: int
    scoring: str = "eod-counted"  # results.json from before `scoring` existed

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two results the same run: part, row, settings, budget, seed, model."""
        return (self.part, self.row, self.settings, self.tokens, self.seed, self.tiny)


def results_from(report: Mapping[str, Any]) -> dict[str, Any]:
    """Forward and both-strand numbers (model, Markov) from `genos eval --both-strands --json`."""
    markov = next((b for b in report["baselines"] if "Markov" in b["name"]), None)
    return {
        "bits_per_base": report["per_strand"]["forward"]["bits_per_base"],
        "markov": markov["per_strand"]["forward"] if markov else None,
        "both_strands": report["bits_per_base"],
        "markov_both_strands": markov["bits_per_base"] if markov else None,
        "bases": report["per_strand"]["forward"]["bases"],
    }


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _delta(model: float, markov: float | None) -> str:
    return "-" if markov is None else f"{model - markov:+.4f}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def markdown_tables(results: Sequence[Result]) -> str:
    """One Markdown table per part, rows in the order run."""
    out = []
    titles = {"ecoli": "E. coli validation split", "cross": f"{HOLDOUT} held out whole"}
    for part in PARTS:
        rows = [r for r in results if r.part == part]
        if not rows:
            continue
        target = "E. coli val" if part == "ecoli" else "S. aureus"
        out += [
            f"### {titles[part]}",
            "",
            f"| row | tokens | steps | wall time | {target} bits/base | Markov | delta "
            "| both strands | Markov (both) | delta (both) | doc bp | vocab |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            out.append(
                f"| {r.row} | {r.tokens:,} | {r.steps} | {_duration(r.train_seconds)} "
                f"| {_number(r.bits_per_base)} | {_number(r.markov)} "
                f"| {_delta(r.bits_per_base, r.markov)} | {_number(r.both_strands)} "
                f"| {_number(r.markov_both_strands)} "
                f"| {_delta(r.both_strands, r.markov_both_strands)} "
                f"| {r.sequence_length_bp} | {r.vocab_size} |"
            )
        if part == "cross":
            out.append("")
            out.append("Uniform guessing: 2.0000 bits/base.")
        out.append("")
    return "\n".join(out)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-quality-"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.results_path = self.out / "results.json"
        self.results = self._load_results()
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        for name in DIST_ENV:  # each run is its own one-process group (not a caller's rank)
            self.env.pop(name, None)
        if args.threads:
            self.env["OMP_NUM_THREADS"] = self.env["MKL_NUM_THREADS"] = str(args.threads)

    # -- results.json: what is done ------------------------------------------------------------

    def _load_results(self) -> list[Result]:
        if not self.results_path.is_file():
            return []
        data = json.loads(self.results_path.read_text())
        return [Result(**r) for r in data["results"]]

    def _save(self) -> None:
        tmp = self.results_path.with_suffix(".json.tmp")
        payload = {"results": [r.__dict__ for r in self.results]}
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(self.results_path)

    def _done(self, key: tuple[Any, ...]) -> Result | None:
        return next((r for r in self.results if r.key == key), None)

    def _record(self, result: Result) -> None:
        self.results = [r for r in self.results if r.key != result.key] + [result]
        self._save()

    # -- running genos -------------------------------------------------------------------------

    def genos(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "genos_cli", *map(str, args)]
        result = subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"genos {' '.join(map(str, args[:2]))} failed:\n{result.stderr[-3000:]}"
            )
        return result

    def genomes(self, part: str) -> list[Path]:
        """The FASTA files a part trains on (none: the embedded E. coli genome)."""
        if part == "ecoli":
            return []
        files = sorted(p for p in Path(self.args.genomes).iterdir() if not p.name.startswith("."))
        return [p for p in files if not p.name.startswith(HOLDOUT)]

    def holdout(self) -> Path:
        matches = sorted(Path(self.args.genomes).glob(f"{HOLDOUT}*"))
        if not matches:
            raise RuntimeError(f"no {HOLDOUT}* genome in {self.args.genomes}")
        return matches[0]

    def data(self, part: str, settings: Mapping[str, Any]) -> Path:
        """The row's data set, prepared once per part and data settings."""
        shape = data_settings(settings)
        directory = self.out / "data" / f"{part}-{key_of(shape)}"
        prefix = directory / part
        if not Path(f"{prefix}.json").is_file():
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "data.yaml"
            config.write_text(config_yaml(shape))
            print(f"  preparing {part} data ({json.dumps(shape) or 'defaults'})", flush=True)
            self.genos("preprocess", *self.genomes(part), "-o", prefix, "--config", config,
                       "--overwrite")  # fmt: skip
        return prefix

    def run_row(self, part: str, row: Row) -> Result | None:
        settings = run_settings(row, self.args.tiny)
        a = self.args
        done = self._done((part, row.name, settings, a.tokens, a.seed, a.tiny))
        if done is not None and done.scoring == SCORING:
            print(f"[done] {part}/{row.name}: in {self.results_path}", flush=True)
            return done
        data = self.data(part, settings)
        run = self.out / "runs" / f"{part}-{row.name}-{self.args.tokens}-s{self.args.seed}"
        if done is not None and (run / "checkpoints").is_dir():
            print(f"[score] {part}/{row.name}: counted {done.scoring}, scoring again")
            t0 = time.perf_counter()
            rescored = Result(**{**done.__dict__, **self.evaluate(part, run, data),
                                 "eval_seconds": time.perf_counter() - t0,
                                 "scoring": SCORING})  # fmt: skip
            self._record(rescored)
            return rescored
        if run.exists():  # an interrupted earlier attempt: start it afresh
            shutil.rmtree(run)
        print(f"[run ] {part}/{row.name}: {row.what}", flush=True)
        extra = ["--no-compile"] if self.args.tiny else []
        t0 = time.perf_counter()
        self.genos("train", "--size", "small", *set_flags(settings), "--data-path", data,
                   "--train-tokens", self.args.tokens, "--seed", self.args.seed,
                   "--output-dir", run, *extra)  # fmt: skip
        train_seconds = time.perf_counter() - t0
        plan = json.loads((run / "run_plan.json").read_text())
        t0 = time.perf_counter()
        scores = self.evaluate(part, run, data)
        result = Result(
            part=part, row=row.name, settings=settings, tokens=self.args.tokens,
            seed=self.args.seed, tiny=self.args.tiny, steps=plan["total_steps"],
            train_seconds=train_seconds, eval_seconds=time.perf_counter() - t0,
            sequence_length_bp=plan["config"]["data"]["sequence_length_bp"],
            vocab_size=plan["config"]["model"]["vocab_size"], scoring=SCORING, **scores,
        )  # fmt: skip
        self._record(result)
        delta = _delta(result.bits_per_base, result.markov)
        summary = f"{result.bits_per_base:.4f} bits/base, Markov {_number(result.markov)}"
        print(f"[ ok ] {part}/{row.name}: {summary} ({delta}), {_duration(train_seconds)}")
        return result

    def evaluate(self, part: str, run: Path, data: Path) -> dict[str, Any]:
        """`genos eval --both-strands` of a run's last checkpoint, as `Result` fields."""
        where = [] if part == "ecoli" else ["--data", self.holdout(), "--markov-data", data]
        report = json.loads(self.genos("eval", run, "--json", "--both-strands", *where).stdout)
        return results_from(report)

    def run(self) -> int:
        rows = select_rows(self.args.rows)
        parts = PARTS if self.args.part == "both" else (self.args.part,)
        shown: list[Result] = []
        failed = 0
        for part in parts:
            for row in rows:
                try:
                    result = self.run_row(part, row)
                except (RuntimeError, OSError, KeyError, ValueError) as exc:
                    failed += 1
                    print(f"[FAIL] {part}/{row.name}: {exc}", flush=True)
                    continue
                if result is not None:
                    shown.append(result)
        print()
        print(markdown_tables(shown))
        for row in rows:
            print(f"- {row.name}: {row.what}")
        print(f"\nruns, data and results.json in {self.out}")
        return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=2_000_000, help="training tokens per row")
    parser.add_argument("--rows", help=f"comma-separated rows (default: all): "
                        f"{', '.join(r.name for r in ALL_ROWS)}")  # fmt: skip
    parser.add_argument("--part", choices=[*PARTS, "both"], default="both")
    parser.add_argument("--out", help="directory for data, runs and results.json (resumable)")
    parser.add_argument("--threads", type=int, help="CPU threads per run (OMP_NUM_THREADS)")
    parser.add_argument("--seed", type=int, default=1234, help="training seed (training.seed)")
    parser.add_argument("--genomes", default=str(GENOMES), help="genomes of the cross part")
    parser.add_argument("--tiny", action="store_true", help="tiny model: checks the harness")
    args = parser.parse_args(argv)
    try:
        select_rows(args.rows)
    except ValueError as exc:
        parser.error(str(exc))
    if args.tokens < 1:
        parser.error("--tokens must be positive")
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
