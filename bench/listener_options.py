#!/usr/bin/env python3
"""Forward + backward time of the ways to run the listener's BiLSTMs over a padded batch.

Usage (from the repository root):

    python bench/listener_options.py [--device cpu|cuda] [--threads 2] [--repeats 3] [--skip packed]

Workload: the peers' standard batch shape (16 utterances, 500-800 frames of 80-dim features,
lengths from workload.py of --peers-dir, default ../shared/bench/peers beside the repository)
through the benchmark listener (3 x BiLSTM 320 + projection 320, frame pairs concatenated
before layers 2 and 3). Options:

  packed     pack_padded_sequence into one bidirectional LSTM (exact)
  unpacked   one bidirectional LSTM over the padding (INEXACT: the backward direction of every
             utterance shorter than the batch starts in the padding)
  reverse    forward direction over the padded batch, backward direction over each utterance
             reversed within its length (gather), two unidirectional LSTM calls (exact)
  blockdiag  both directions in ONE unidirectional LSTM call of 2 x 320 units with block-diagonal
             weights over [x; x reversed within length] (exact; twice the recurrent FLOPs)

Prints a table: median/min forward, backward and total seconds, and the largest difference of
the outputs from the packed reference (from "reverse" when packed is skipped).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asr.models.listener import _IMPLS, Listener, ListenerConfig, reverse_index  # noqa: E402


def birnn_blockdiag(rnn: nn.LSTM, x: Tensor, lengths: Tensor) -> Tensor:
    """Both directions as one unidirectional LSTM with block-diagonal weights: (B, T, D) -> (B, T, 2H)."""
    b, t, d = x.shape
    h = rnn.hidden_size
    idx = reverse_index(lengths, t).unsqueeze(-1)
    xx = torch.cat([x, x.gather(1, idx.expand(b, t, d))], dim=-1)  # (B, T, 2D)

    def block(wf: Tensor, wb: Tensor) -> Tensor:
        # per gate g: rows [g*2H, g*2H+H) read the first input half with the forward weights,
        # rows [g*2H+H, (g+1)*2H) read the second half with the reverse weights
        zf, zb = wf.new_zeros(h, wb.shape[1]), wb.new_zeros(h, wf.shape[1])
        gates = [torch.cat([torch.cat([wf[g * h:(g + 1) * h], zf], 1), torch.cat([zb, wb[g * h:(g + 1) * h]], 1)])
                 for g in range(4)]
        return torch.cat(gates)

    def bias(bf: Tensor, bb: Tensor) -> Tensor:
        return torch.cat([torch.cat([bf[g * h:(g + 1) * h], bb[g * h:(g + 1) * h]]) for g in range(4)])

    w = [block(rnn.weight_ih_l0, rnn.weight_ih_l0_reverse), block(rnn.weight_hh_l0, rnn.weight_hh_l0_reverse),
         bias(rnn.bias_ih_l0, rnn.bias_ih_l0_reverse), bias(rnn.bias_hh_l0, rnn.bias_hh_l0_reverse)]
    h0 = x.new_zeros(1, b, 2 * h)
    out, _, _ = torch.lstm(xx, (h0, h0), w, True, 1, 0.0, rnn.training, False, True)
    fwd, bwd = out[..., :h], out[..., h:]
    return torch.cat([fwd, bwd.gather(1, idx.expand(b, t, h))], dim=-1)


def workload_lengths(peers_dir: str) -> list[int]:
    """Input lengths of the standard workload."""
    sys.path.insert(0, peers_dir)
    import workload as W

    return W.make_workload()["ilens"]


def main() -> int:
    """Time every option and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers-dir", default=str(REPO.parent / "shared" / "bench" / "peers"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per option (packed: at most 2 on CPU)")
    ap.add_argument("--skip", nargs="*", default=[], help="options to leave out")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    lengths = torch.tensor(workload_lengths(args.peers_dir))
    x = torch.randn(len(lengths), int(lengths.max()), 80)
    x[torch.arange(x.shape[1]) >= lengths[:, None]] = 0.0
    listener = Listener(ListenerConfig(input_dim=80, layers=3, hidden=320, reduce=(1, 2, 2), projection=320))
    listener.to(device).train()
    x, lengths = x.to(device), lengths.to(device)
    _IMPLS["blockdiag"] = birnn_blockdiag

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    order = [o for o in ("reverse", "blockdiag", "unpacked", "packed") if o not in args.skip]
    rows = []
    for impl in order:
        repeats = min(args.repeats, 2) if impl == "packed" and device.type == "cpu" else args.repeats
        fwd, bwd = [], []
        for i in range(repeats + 1):  # the first run warms up
            xi = x.clone().requires_grad_()
            sync()
            t0 = time.perf_counter()
            out, out_lengths = listener(xi, lengths, impl=impl)
            sync()
            t1 = time.perf_counter()
            out.sum().backward()
            sync()
            t2 = time.perf_counter()
            if i:
                fwd.append(t1 - t0)
                bwd.append(t2 - t1)
            listener.zero_grad()
        with torch.no_grad():
            out = listener(x, lengths, impl=impl)[0].float().cpu()
        rows.append((impl, fwd, bwd, out))
        print(f"  {impl}: done", file=sys.stderr, flush=True)
    outputs = {impl: out for impl, _, _, out in rows}
    reference = outputs.get("packed", outputs.get("reverse"))
    print(f"listener fwd+bwd, batch {len(lengths)} x {int(lengths.max())} frames x 80, 3 x BiLSTM 320 + proj 320, "
          f"reduce (1, 2, 2), device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'option':<10} {'exact':<6} {'fwd med':>8} {'bwd med':>8} {'total med':>9} {'total min':>9}  "
          "max |diff| vs reference")
    for impl, fwd, bwd, out in rows:
        tot = [a + b for a, b in zip(fwd, bwd)]
        diff = (out - reference).abs().max().item() if reference is not None else float("nan")
        exact = "no" if impl == "unpacked" else "yes"
        print(f"{impl:<10} {exact:<6} {statistics.median(fwd):8.3f} {statistics.median(bwd):8.3f} "
              f"{statistics.median(tot):9.3f} {min(tot):9.3f}  {diff:.2e}")
    print(f"loadavg {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
