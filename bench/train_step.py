#!/usr/bin/env python3
"""Training-step (and greedy decoding) speed of the asr LAS model on the peers' standard workload.

Usage (from the repository root):

    python bench/train_step.py [--ctc-weight 0.3] [--threads 2] [--model las|espnet] [--json] [--peers-dir DIR]

The workload (16 utterances of 500-800 frames of 80-dim features, 60-100 tokens, vocabulary 30)
comes from `workload.py` of the peer benchmark folder (--peers-dir, default ../shared/bench/peers
beside the repository), which also benchmarks ESPnet and SpeechBrain on it. The model matches
the peers' size: 3-layer BiLSTM 320/direction + projection 320, x4 time reduction (layers 2 and 3
concatenate frame pairs; with --model espnet they keep every 2nd frame, as ESPnet's blstmp, and the
attention is queried by the previous decoder state), 1-layer LSTM 320 speller with location
attention 10 x 201, features in (no front-end). Token ids follow the workload: 0 = blank/padding,
29 = [GO] and [EOS].
One step = forward + backward + gradient clipping (5.0) + Adam (lr 1e-3).
The listener skips padding exactly (like the peers' packed runs) without packed sequences.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from standard import DEFAULT_PEERS_DIR, MODELS, import_workload, standard_las, suppress_eos, workload_batch  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers-dir", default=str(DEFAULT_PEERS_DIR),
                    help="folder holding the peers' workload.py")
    ap.add_argument("--ctc-weight", type=float, default=0.0, help="joint CTC weight (0 = attention only)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default: workload's, 3)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: workload's, 10)")
    ap.add_argument("--decode-repeats", type=int, default=3, help="timed greedy decodes (0 = skip)")
    ap.add_argument("--model", default="las", choices=sorted(MODELS),
                    help="form of the model: the LAS paper's or the peers' ESPnet model's (bench/standard.py)")
    ap.add_argument("--impl", default="auto", choices=["auto", "reverse", "packed"], help="listener implementation")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--label", default="", help="free text copied into the result")
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    return ap.parse_args()


def main() -> int:
    """Run the benchmark and print the result."""
    args = parse_args()
    W = import_workload(args.peers_dir)

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    import torch

    from asr.search import greedy_search
    import_s = time.perf_counter() - t0

    torch.set_num_threads(args.threads)
    torch.manual_seed(W.SEED)
    device = torch.device(args.device)
    warmup = W.N_WARMUP if args.warmup is None else args.warmup
    steps = W.N_TIMED if args.steps is None else args.steps

    model = standard_las(W, ctc_weight=args.ctc_weight, impl=args.impl, model=args.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    w, (feats, ilens, targets, olens) = workload_batch(W, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step() -> float:
        out = model.forward_features(feats, ilens, targets, olens)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(out["loss"].detach())

    model.train()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    times, warm, losses = [], [], []
    for i in range(warmup + steps):
        t = time.perf_counter()
        losses.append(train_step())
        sync()
        (times if i >= warmup else warm).append(time.perf_counter() - t)
    train_cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)

    res = {"toolkit": "asr", "label": args.label, "params": sum(p.numel() for p in model.parameters()),
           "params_by_part": {name: sum(p.numel() for p in part.parameters())
                              for name, part in (("listener", model.listener), ("speller", model.speller),
                                                 ("attention(in speller)", model.speller.attention),
                                                 ("ctc", model.ctc)) if part is not None},
           "workload": W.fingerprint(w), "import_s": round(import_s, 3),
           "train_step": W.summarize(times), "train_warmup_steps_s": [round(t, 4) for t in warm],
           "train_loss_first_last": [round(losses[0], 3), round(losses[-1], 3)],
           "train_cpu_util": round(train_cpu, 2), "rss_after_train_mb": W.peak_rss_mb()}

    if args.decode_repeats > 0:
        model.eval()
        suppress_eos(model, W)

        def greedy() -> list[list[int]]:
            enc, enc_lengths = model.encode_features(feats, ilens)
            return greedy_search(model, enc, enc_lengths, max_len_ratio=1e9, max_len=W.MAX_DECODE_STEPS)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        greedy()  # warm-up
        gtimes = []
        for _ in range(args.decode_repeats):
            t = time.perf_counter()
            hyps = greedy()
            sync()
            gtimes.append(time.perf_counter() - t)
        res["greedy_batch16"] = W.summarize(gtimes)
        res["greedy_out_lens"] = sorted({len(h) for h in hyps})
        res["decode_cpu_util"] = round((time.process_time() - cpu0) / (time.perf_counter() - wall0), 2)

    res["rss_peak_mb"] = W.peak_rss_mb()
    res["config"] = {"model": args.model,
                     "listener": f"3 x BiLSTM 320 + proj 320, reduce (1, 2, 2) "
                                 f"({model.listener.cfg.subsample}), impl "
                                 f"{model.listener.impl_for(device)} (exact, skips padding)",
                     "speller": f"LSTMCell 320, location attention 320 (10 x 201) queried by the "
                                f"{model.speller.cfg.query} state, Linear([s; c] -> 30)",
                     "ctc_weight": args.ctc_weight, "device": str(device), "opt": "Adam(lr=1e-3)",
                     "max_grad_norm": 5.0, "max_decode_steps": W.MAX_DECODE_STEPS}
    res["versions"] = {"torch": torch.__version__, "python": platform.python_version()}
    res["threads"] = {"torch_num_threads": torch.get_num_threads()}
    res["loadavg_start_end"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]

    if args.json:
        print(json.dumps(res))
    else:
        ts = res["train_step"]
        print(f"params {res['params']:,}  ({res['params_by_part']})")
        print(f"train step: median {ts['median_s']:.3f} s  min {ts['min_s']:.3f}  max {ts['max_s']:.3f}  "
              f"(warm-up {res['train_warmup_steps_s']})  loss {res['train_loss_first_last']}")
        if "greedy_batch16" in res:
            print(f"greedy 16 utt x {W.MAX_DECODE_STEPS} steps: median {res['greedy_batch16']['median_s']:.3f} s")
        print(f"peak RSS {res['rss_peak_mb']} MB  cpu util train {res['train_cpu_util']} "
              f"decode {res.get('decode_cpu_util')}  loadavg {res['loadavg_start_end']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
