"""Inference on a CUDA GPU, its weights in the dtype inference picks there (bf16 where
native): the cached decoder against the full forward pass on the same GPU, and the three
commands end to end, scoring what the CPU scores. Skipped where there is no GPU (`gpu`
marker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genos_cli.device import inference_dtype
from genos_cli.inference.kv_cache import KVCache, forward_cached
from genos_cli.inference.loading import load_for_inference
from tests.helpers import genos

pytestmark = pytest.mark.gpu


def test_cached_forward_on_cuda_tracks_the_full_forward(
    tiny_checkpoints: dict[str, Path], ecoli_sequence: str
) -> None:
    device = torch.device("cuda")
    ckpt = load_for_inference(tiny_checkpoints["bpe"], "cuda")
    model, tok = ckpt.model, ckpt.tokenizer
    dtype = inference_dtype(device)
    assert {p.dtype for p in model.parameters()} == {dtype}
    ids = [tok.eod_id, *tok.encode(ecoli_sequence[1000:1400])][:100]
    batch = torch.tensor([ids, ids[::-1]], device=device)  # (2, 100)
    with torch.inference_mode():
        full = model(batch).logits.float()  # (2, 100, V)
        cache = KVCache.allocate(model.config, 2, 128, device=device, dtype=dtype)
        got = [forward_cached(model, cache, batch[:, :60], last=False)]
        got += [
            forward_cached(model, cache, batch[:, t : t + 1], last=False) for t in range(60, 100)
        ]
    cached = torch.cat(got, dim=1).float()
    # bf16: the two paths round differently (kernels, and a near-tied routing may flip), so
    # close on average and the same most likely token almost everywhere.
    assert (cached - full).abs().mean() < 0.05 * full.abs().mean()
    assert (cached.argmax(-1) == full.argmax(-1)).float().mean() > 0.9


def test_commands_on_cuda(tiny_checkpoints: dict[str, Path], ecoli_sequence: str,
                          tmp_path: Path) -> None:  # fmt: skip
    ckpt = tiny_checkpoints["bpe"]
    result = genos("generate", ckpt, "--device", "cuda", "--num-bases", "300",
                   "--num-samples", "4", "--seed", "1", "-o", tmp_path / "gen.fa")  # fmt: skip
    assert result.exit_code == 0, result.output
    seqs = [line for line in (tmp_path / "gen.fa").read_text().splitlines() if line[0] != ">"]
    assert len("".join(seqs)) == 1200 and set("".join(seqs)) <= set("ACGT")
    fasta = tmp_path / "s.fa"
    fasta.write_text(f">a\n{ecoli_sequence[:2000]}\n>b\n{ecoli_sequence[9000:9300]}\n")
    bpb = {}
    for device in ("cpu", "cuda"):
        result = genos("score", ckpt, "--fasta", fasta, "--device", device)
        assert result.exit_code == 0, result.output
        bpb[device] = [float(line.split("\t")[5]) for line in result.stdout.splitlines()[1:]]
    assert bpb["cuda"] == pytest.approx(bpb["cpu"], rel=2e-2)
    result = genos("embed", ckpt, "--fasta", fasta, "--device", "cuda", "-o", tmp_path / "e.npy")
    assert result.exit_code == 0, result.output
