"""`genos score --vcf` speed: variants per second on this machine.

    python benchmarks/bench_score.py [--variants 2000] [--threads 2]

Writes the small preset with random weights as a checkpoint (speed does not depend on the
weights), E. coli as a plain FASTA reference, and a VCF of random SNVs at real E. coli
positions (REF = the genome's base, ALT a random other base), then runs `genos score` in a
fresh process per setting and prints the command's own count (ALT alleles scored per
second of scoring, checkpoint loading excluded) and the whole command's wall time.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENOMES = REPO.parent / "shared" / "data" / "genomes"
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    from bench_generate import make_small_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ckpt = make_small_checkpoint(tmp / "ckpt")
        with gzip.open(GENOMES / "ecoli_k12_mg1655.fasta.gz", "rt") as fh:
            header = fh.readline().split()[0][1:]
            genome = "".join(line.strip() for line in fh).upper()
        reference = tmp / "ecoli.fa"
        reference.write_text(f">{header}\n{genome}\n")
        rng = random.Random(0)
        lines = ["##fileformat=VCFv4.2", f"##contig=<ID={header},length={len(genome)}>",
                 "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]  # fmt: skip
        for i in range(args.variants):
            p = rng.randrange(1000, len(genome) - 1000)
            alt = rng.choice([b for b in "ACGT" if b != genome[p]])
            lines.append(f"{header}\t{p + 1}\tv{i}\t{genome[p]}\t{alt}\t.\t.\t.")
        vcf = tmp / "snvs.vcf"
        vcf.write_text("\n".join(lines) + "\n")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), XDG_CACHE_HOME=str(tmp))
        print(f"small preset, random weights, {args.variants} SNVs on E. coli, "
              f"{args.threads} threads")  # fmt: skip
        print(f"{'window':>7} {'strands':>8} {'variants/s':>11} {'command s':>10}")
        for window, both in ((511, False), (511, True), (128, False), (128, True)):
            command = [sys.executable, "-m", "genos_cli", "score", str(ckpt), "--vcf", str(vcf),
                       "--reference", str(reference), "--window", str(window), "--tsv",
                       "-o", str(tmp / "out.tsv"), "--device", "cpu"]  # fmt: skip
            if both:
                command.append("--both-strands")
            t0 = time.perf_counter()
            done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            rate = re.search(r"([\d,.]+) variants/s", done.stderr)
            print(f"{window:>7} {'both' if both else 'forward':>8} "
                  f"{rate.group(1) if rate else '?':>11} {wall:>10.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
