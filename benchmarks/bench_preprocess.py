"""Preprocessing throughput and memory on the real genomes, next to bare SentencePiece.

    python benchmarks/bench_preprocess.py [--genomes ../shared/data/genomes] [--repeats 3]

Runs `genos preprocess` end to end (read + decompress + normalise + cut + encode + write
.bin/.idx) in a fresh subprocess per configuration, so peak RSS is the run's own, and in
the same run times SentencePiece's own `encode` (single thread, batch call, text already in
memory) on exactly the 512-bp sequences genos encodes. Prints bp/s, tokens/s, peak RSS (of
the process tree: main process plus encoding workers) and the ratios the foundation issue
sets targets for:

    BPE, 1 worker   >= 0.85 x bare single-thread encode
    BPE, 2 workers  >= 1.6  x bare single-thread encode
    nucleotide      >= 100 Mbp/s
    peak RSS        <  300 MB
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GENOMES = REPO.parent / "shared" / "data" / "genomes"

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from genos_cli.data.pipeline import PreprocessSettings, make_plan, run
genomes, out, kind, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
settings = PreprocessSettings(inputs=(Path(genomes),), output_prefix=Path(out),
                              tokenizer_kind=kind, workers=workers)
t0 = time.perf_counter()
result = run(make_plan(settings))
seconds = time.perf_counter() - t0
# Peak of the whole process tree, bounded above by main + workers x the largest worker.
main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if workers > 1 else 0
print(json.dumps({"seconds": seconds, "bases": result.read.bases, "tokens": result.tokens,
                  "peak_rss_mb": main + workers * worker if workers > 1 else main}))
"""


def run_pipeline(genomes: Path, kind: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(genomes), f"{tmp}/bench", kind, str(workers)],
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


_BARE_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from bench_preprocess import bare_sentencepiece
print(json.dumps(bare_sentencepiece(Path(sys.argv[1]))))
"""


def run_bare(genomes: Path) -> dict:
    """Bare SentencePiece in its own process: the benchmark's parent stays small, so the
    pipeline subprocesses (which inherit the parent's peak RSS across fork) measure true."""
    out = subprocess.run(
        [sys.executable, "-c", _BARE_CHILD, str(genomes), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bare_sentencepiece(genomes: Path) -> dict:
    """SentencePiece's own encode over the very sequences genos writes."""
    import sentencepiece as spm

    from genos_cli.data.fasta import ReadStats, SequenceReader
    from genos_cli.data.sources import expand_inputs
    from genos_cli.data.tokenizers import default_tokenizer_path
    from genos_cli.data.windows import Windower, WindowSpec

    windower = Windower(WindowSpec(), val_ratio=0.0, seed=0)
    texts: list[str] = []
    stats = ReadStats()
    for path in expand_inputs([genomes]):
        for batch in windower.windows(SequenceReader(path, stats).blocks()):
            texts += [s.decode() for s in batch.sequences()]
    for batch in windower.flush():
        texts += [s.decode() for s in batch.sequences()]
    sp = spm.SentencePieceProcessor(model_file=str(default_tokenizer_path()))
    t0 = time.perf_counter()
    ids = sp.encode(texts, num_threads=1)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "sequence_bp": sum(map(len, texts)),
        "tokens": sum(map(len, ids)),
        "bases": stats.bases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=Path, default=DEFAULT_GENOMES)
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    args = parser.parse_args()
    if not args.genomes.is_dir():
        sys.exit(f"genomes directory {args.genomes} not found")

    configs = [("bpe", 1), ("bpe", 2), ("nucleotide", 1)]
    runs: dict[str, list[dict]] = {"bare": []}
    runs.update({f"{k}/{w}": [] for k, w in configs})
    # Alternate configurations so machine noise spreads evenly over all of them.
    for _ in range(args.repeats):
        runs["bare"].append(run_bare(args.genomes))
        for kind, workers in configs:
            runs[f"{kind}/{workers}"].append(run_pipeline(args.genomes, kind, workers))

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    bare_bps = statistics.median(r["sequence_bp"] / r["seconds"] for r in runs["bare"])
    mbp = med("bare", "bases") / 1e6
    print(f"input: {args.genomes} ({mbp:.1f} Mbp), cpus: {os.cpu_count()}")
    print(f"median of {args.repeats} runs per row\n")
    header = (
        f"{'configuration':<36}{'Mbp/s':>8}{'Mtok/s':>8}{'seconds':>9}{'peak RSS':>10}"
        f"{'vs bare':>9}"
    )
    print(header)
    print("-" * len(header))
    bare_tps = statistics.median(r["tokens"] / r["seconds"] for r in runs["bare"])
    print(
        f"{'SentencePiece encode, 1 thread':<36}{bare_bps / 1e6:>8.2f}{bare_tps / 1e6:>8.2f}"
        f"{med('bare', 'seconds'):>9.2f}{'-':>10}{1.0:>9.2f}"
    )
    results = {}
    for kind, workers in configs:
        name = f"{kind}/{workers}"
        bps = statistics.median(r["bases"] / r["seconds"] for r in runs[name])
        tps = statistics.median(r["tokens"] / r["seconds"] for r in runs[name])
        rss = max(r["peak_rss_mb"] for r in runs[name])
        ratio = bps / bare_bps
        results[name] = (bps, ratio, rss)
        label = f"genos preprocess {kind}, {workers} worker{'s' if workers > 1 else ''}"
        print(
            f"{label:<36}{bps / 1e6:>8.2f}{tps / 1e6:>8.2f}{med(name, 'seconds'):>9.2f}"
            f"{rss:>8.0f}MB{ratio:>9.2f}"
        )
    print("\ntargets:")
    checks = [
        ("BPE 1 worker >= 0.85 x bare", results["bpe/1"][1] >= 0.85, f"{results['bpe/1'][1]:.2f}x"),
        ("BPE 2 workers >= 1.6 x bare", results["bpe/2"][1] >= 1.6, f"{results['bpe/2'][1]:.2f}x"),
        (
            "nucleotide >= 100 Mbp/s",
            results["nucleotide/1"][0] >= 100e6,
            f"{results['nucleotide/1'][0] / 1e6:.0f} Mbp/s",
        ),
        (
            "peak RSS < 300 MB",
            all(r[2] < 300 for r in results.values()),
            f"{max(r[2] for r in results.values()):.0f} MB",
        ),
    ]
    for label, ok, value in checks:
        print(f"  {'met ' if ok else 'MISS'}  {label:<30} measured {value}")


if __name__ == "__main__":
    main()
