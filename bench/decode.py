#!/usr/bin/env python3
"""Decoding speed (real-time factor) of greedy and beam-10 search on CPU, beside ESPnet's beam search.

Usage (from the repository root):

    python bench/decode.py [--threads 1,2] [--dtypes float32,bfloat16] [--models espnet,las] [--repeats 1]
                           [--with-peers] [--rounds 1] [--json]

Workload and model as bench/train_step.py: the peers' standard batch (workload.py in --peers-dir,
default ../shared/bench/peers beside the repository) and our LAS at the peers' size (3 x BiLSTM 320
+ projection, x4, LSTM 320 speller, location attention 10 x 201), randomly initialised with the
workload's seed, features in (no front-end). Same fixed-length protocol as the peers: the [EOS]
output bias is set to -1e4 and the maximum length to 120 tokens, so every search runs exactly 120
decoder steps. Every figure includes the encoder, like the peers'.

* greedy: `decode` with beam 1, the 16 utterances as one batch, and one at a time;
* beam 10: utterances 0..3 of the workload, one at a time (per utterance) and as one batch,
  with attention only and with CTC prefix scores (ctc_weight 0.3, the model then has a CTC head,
  ESPnet's es-ctc run uses --mtlalpha 0.3).

--dtypes adds rows with our encoder and decoder in bfloat16 (`asr evaluate --dtype bfloat16`; the
features and scores stay float32); ESPnet's figures are always float32.

--models picks the form of our model at the peers' size (bench/standard.py): "espnet", the peers'
ESPnet model's (blstmp encoder keeping every 2nd frame, with ESPnet's encoder parameter count; the
attention queried by the state before the step, so beam search attends once per parent hypothesis),
and "las", the LAS paper's (frames concatenated by the pyramid, 1.6 M more encoder parameters; the
attention queried by the state after the step), our recipes' default. Random weights from one seed.

Real-time factor = decode seconds / audio seconds, audio = input frames x 10 ms. With --with-peers
(and the peers' ESPnet venv present, see the peers' README) the peers' espnet_las.py runs after our
figures, once with --mtlalpha 0 and once with 0.3 (--peer-args, default a reduced protocol), and
the table gets ESPnet's beam10_4utt_sequential / _batched beside ours and the ratio
ESPnet per-utterance beam 10 / our batched beam 10 at the same thread count (2, the peers').
A shared machine's speed can drift by tens of percent over minutes, so --rounds N alternates the two
sides N times, takes each ratio within a round and reports the median over rounds (and each round's).
Table to stdout (or one JSON object with --json), progress to stderr.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from standard import DEFAULT_PEERS_DIR, MODELS, import_workload, standard_las, suppress_eos, workload_batch  # noqa: E402

FRAME_S = 0.01  # one input frame of the workload: 10 ms
DEFAULT_VENVS = "/tmp/asr-peers"


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers-dir", default=str(DEFAULT_PEERS_DIR), help="folder holding the peers' scripts")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of each figure (median), after a warm-up")
    ap.add_argument("--beam", type=int, default=10, help="beam size")
    ap.add_argument("--ctc-weights", default="0,0.3", help="comma-separated CTC weights of the beam rows")
    ap.add_argument("--dtypes", default="float32",
                    help="comma-separated decoding precisions of our model: float32, bfloat16 (asr --dtype)")
    ap.add_argument("--models", default="espnet,las",
                    help="comma-separated forms of our model: espnet (the peers' ESPnet model's), "
                         "las (the LAS paper's)")
    ap.add_argument("--skip-per-utterance", action="store_true", help="only the batched figures")
    ap.add_argument("--with-peers", action="store_true", help="also run the peers' ESPnet benchmark")
    ap.add_argument("--peers-venv", default=os.environ.get("PEERS_VENV_DIR", DEFAULT_VENVS),
                    help="folder of the peers' virtual environments")
    ap.add_argument("--peer-args", default="--warmup 1 --steps 1 --decode-repeats 1",
                    help="extra arguments of espnet_las.py (reduced protocol by default)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of (our figures, then ESPnet's); each ratio is taken within a round and the "
                         "table gives medians over rounds, so a slow spell of the machine hits both sides")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    unknown = sorted(set(args.models.split(",")) - set(MODELS))
    if unknown:
        ap.error(f"--models: unknown form {', '.join(unknown)} (known: {', '.join(sorted(MODELS))})")
    return args


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[decode-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Bench:
    """Times encoder + search of workload utterances on one model."""

    def __init__(self, W, ctc_weight: float, dtype: str = "float32", model: str = "las") -> None:
        import torch

        torch.manual_seed(W.SEED)
        self.model = standard_las(W, ctc_weight=ctc_weight, model=model).eval()
        suppress_eos(self.model, W)
        from asr.recognizer import DECODING_DTYPES

        self.model.set_decoding_dtype(DECODING_DTYPES[dtype])  # the same weights, rounded for bfloat16
        self.W = W
        _, (self.feats, self.ilens, _, _) = workload_batch(W, "cpu")

    def run(self, utts: list[int], batched: bool, opts) -> tuple[float, list[int]]:
        """Seconds to encode and decode utterances `utts` (one batch, or one at a time); output lengths."""
        import torch

        from asr.search import decode

        groups = [utts] if batched else [[i] for i in utts]
        lens: list[int] = []
        t0 = time.perf_counter()
        with torch.no_grad():
            for group in groups:
                idx = torch.tensor(group)
                lengths = self.ilens[idx]
                feats = self.feats[idx, : int(lengths.max())]
                enc, enc_lengths = self.model.encode_features(feats, lengths)
                lens += [len(h[0].tokens) for h in decode(self.model, enc, enc_lengths, opts)]
        return time.perf_counter() - t0, lens

    def timed(self, utts: list[int], batched: bool, opts, repeats: int) -> dict:
        """Median seconds over `repeats` runs, real-time factor and output lengths."""
        times, lens = [], []
        for _ in range(repeats):
            seconds, lens = self.run(utts, batched, opts)
            times.append(seconds)
        seconds = sorted(times)[len(times) // 2]
        audio = sum(int(self.ilens[i]) for i in utts) * FRAME_S
        return {"seconds": round(seconds, 4), "all_s": [round(t, 4) for t in times], "audio_s": round(audio, 2),
                "rtf": round(seconds / audio, 5), "out_lens": sorted(set(lens))}


def our_figures(W, args: argparse.Namespace) -> list[dict]:
    """Every (threads, search, ctc weight, mode) figure of our model."""
    import torch

    from asr.search import DecodeOptions

    threads = [int(t) for t in args.threads.split(",")]
    ctc_weights = [float(c) for c in args.ctc_weights.split(",")]
    modes = [True] if args.skip_per_utterance else [False, True]
    beam_utts = list(range(W.N_BEAM_UTTS))
    rows = []
    dtypes, models = args.dtypes.split(","), args.models.split(",")
    benches = {(w, d, f): Bench(W, w, d, f) for w in sorted({0.0, *ctc_weights}) for d in dtypes for f in models}
    for n_threads, dtype, model in [(n, d, f) for n in threads for d in dtypes for f in models]:
        torch.set_num_threads(n_threads)
        plan = [("greedy", 0.0, list(range(W.BATCH)), DecodeOptions(beam_size=1, max_len=W.MAX_DECODE_STEPS))]
        plan += [(f"beam{args.beam}", w, beam_utts,
                  DecodeOptions(beam_size=args.beam, ctc_weight=w, max_len=W.MAX_DECODE_STEPS)) for w in ctc_weights]
        for search, ctc_weight, utts, opts in plan:
            bench = benches[ctc_weight, dtype, model]
            bench.run(utts[:1], True, DecodeOptions(beam_size=opts.beam_size, ctc_weight=ctc_weight, max_len=5))
            for batched in modes:
                fig = bench.timed(utts, batched, opts, args.repeats)
                row = {"threads": n_threads, "dtype": dtype, "model": model, "search": search,
                       "ctc_weight": ctc_weight, "mode": "batched" if batched else "per-utterance",
                       "utterances": len(utts), **fig}
                log(f"{n_threads} threads {dtype} {model} {search} ctc {ctc_weight} {row['mode']}: "
                    f"{fig['seconds']:.3f} s (RTF {fig['rtf']:.4f}) load {os.getloadavg()[0]:.2f}")
                rows.append(row)
    return rows


def espnet_figures(args: argparse.Namespace, mtlalpha: float) -> dict | None:
    """One run of the peers' espnet_las.py; its JSON line, or None when it cannot run."""
    python = Path(args.peers_venv) / "espnet" / "bin" / "python"
    script = Path(args.peers_dir) / "espnet_las.py"
    if not python.exists() or not script.exists():
        log(f"ESPnet skipped: {python} or {script} is missing (run setup.sh of the peers)")
        return None
    cmd = [str(python), str(script), "--mtlalpha", str(mtlalpha), *shlex.split(args.peer_args),
           "--label", f"es-decode-bench/mtlalpha{mtlalpha}"]
    log("running " + " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=script.parent, stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        log(f"ESPnet run failed (exit {proc.returncode})")
        return None
    log(f"ESPnet (mtlalpha {mtlalpha}) done in {time.perf_counter() - t0:.0f} s")
    return json.loads(lines[-1])


def peer_rows(W, peers: dict[float, dict]) -> list[dict]:
    """ESPnet's beam (and greedy) figures as rows of the table."""
    utts = list(range(W.N_BEAM_UTTS))
    w = W.make_workload()
    audio_beam = sum(w["ilens"][i] for i in utts) * FRAME_S
    audio_all = sum(w["ilens"]) * FRAME_S
    rows = []
    for mtlalpha, res in peers.items():
        n_threads = res.get("threads", {}).get("torch_num_threads")
        figures = [("beam10_4utt_sequential", "beam10", "per-utterance", len(utts), audio_beam),
                   ("beam10_4utt_batched", "beam10", "batched", len(utts), audio_beam)]
        if mtlalpha == 0.0:
            figures.append(("greedy_batch16", "greedy", "batched", W.BATCH, audio_all))
        for key, search, mode, n_utts, audio in figures:
            if key in res:
                seconds = res[key]["median_s"]
                rows.append({"toolkit": "espnet", "threads": n_threads, "dtype": "float32", "model": "espnet",
                             "search": search, "ctc_weight": mtlalpha,
                             "mode": mode, "utterances": n_utts, "seconds": seconds, "audio_s": round(audio, 2),
                             "rtf": round(seconds / audio, 5), "decode_cpu_util": res.get("decode_cpu_util"),
                             "loadavg_start_end": res.get("loadavg_start_end")})
    return rows


def ratios(ours: list[dict], theirs: list[dict]) -> list[dict]:
    """ESPnet per-utterance (and batched) beam 10 seconds / our batched beam 10 seconds, same threads and CTC weight."""
    out = []
    for es in theirs:
        if es["search"] != "beam10":
            continue
        for row in ours:
            if (row["search"], row["mode"], row["threads"], row["ctc_weight"]) == \
                    ("beam10", "batched", es["threads"], es["ctc_weight"]):
                out.append({"ctc_weight": es["ctc_weight"], "threads": es["threads"], "espnet_mode": es["mode"],
                            "ours_dtype": row["dtype"], "ours_model": row["model"], "espnet_s": es["seconds"],
                            "ours_batched_s": row["seconds"],
                            "speedup": round(es["seconds"] / row["seconds"], 2)})
    return out


def print_table(res: dict) -> None:
    """Human-readable table of `res`."""
    print(f"decode speed, workload {res['workload']['sum_ilens']} frames in 16 utterances, "
          f"max {res['max_decode_steps']} steps, EOS suppressed; seconds include the encoder")
    print(f"{'toolkit':8} {'threads':>7} {'dtype':8} {'model':6} {'search':7} {'ctc':>4} {'mode':14} {'utts':>4} "
          f"{'seconds':>9} {'audio s':>8} {'RTF':>8}")
    for row in res["rows"]:
        print(f"{row.get('toolkit', 'asr'):8} {row['threads']!s:>7} {row['dtype']:8} {row['model']:6} "
              f"{row['search']:7} {row['ctc_weight']:>4} "
              f"{row['mode']:14} {row['utterances']:>4} {row['seconds']:>9.3f} {row['audio_s']:>8.2f} "
              f"{row['rtf']:>8.4f}")
    several = len(res["rounds"]) > 1
    if several:
        print(f"seconds and ratios: medians over {len(res['rounds'])} rounds; each ratio is taken within a round")
    for r in res["ratios"]:
        times = f"{r['espnet_s']:.2f} s / {r['ours_batched_s']:.3f} s"
        ratio = (f"median {r['speedup']}x (rounds: {', '.join(f'{x}x' for x in r['round_speedups'])}; "
                 f"median times {times})") if several else f"{times} = {r['speedup']}x"
        print(f"ESPnet {r['espnet_mode']} beam10 (float32) / our batched beam10 ({r['ours_dtype']}, {r['ours_model']}, "
              f"ctc {r['ctc_weight']}, {r['threads']} threads): {ratio}")
    print(f"load average at start/end: {res['loadavg_start_end']}  (2 cores; > 2 means contended figures)")


def one_round(W, args: argparse.Namespace) -> dict:
    """Our figures, then ESPnet's (with --with-peers), and the ratios between them."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    rows = our_figures(W, args)
    cpu_util = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    peers: dict[float, dict] = {}
    if args.with_peers:
        for mtlalpha in sorted({float(c) for c in args.ctc_weights.split(",")}):
            res = espnet_figures(args, mtlalpha)
            if res is not None:
                peers[mtlalpha] = res
    theirs = peer_rows(W, peers)
    return {"rows": rows + theirs, "ratios": ratios(rows, theirs), "decode_cpu_util": round(cpu_util, 2),
            "espnet_raw": {str(k): v for k, v in peers.items()}}


ROW_KEY = ("toolkit", "threads", "dtype", "model", "search", "ctc_weight", "mode")
RATIO_KEY = ("ctc_weight", "threads", "espnet_mode", "ours_dtype", "ours_model")


def _by_key(rounds: list[dict], part: str, key: tuple[str, ...]) -> list[list[dict]]:
    """The entries of `part` ("rows" or "ratios") of every round, grouped by their `key` fields."""
    groups: dict[tuple, list[dict]] = {}
    for rnd in rounds:
        for entry in rnd[part]:
            groups.setdefault(tuple(entry.get(k) for k in key), []).append(entry)
    return list(groups.values())


def over_rounds(rounds: list[dict]) -> tuple[list[dict], list[dict]]:
    """Rows and ratios of all rounds merged: medians, with each round's value kept (round_s, round_speedups)."""
    merged_rows = []
    for same in _by_key(rounds, "rows", ROW_KEY):
        seconds = statistics.median(r["seconds"] for r in same)
        first = {k: v for k, v in same[0].items() if k != "all_s"}  # each round's repeats stay under "rounds"
        merged_rows.append({**first, "seconds": round(seconds, 4), "rtf": round(seconds / first["audio_s"], 5),
                            "round_s": [r["seconds"] for r in same]})
    merged_ratios = [{**same[0], "espnet_s": statistics.median(r["espnet_s"] for r in same),
                      "ours_batched_s": statistics.median(r["ours_batched_s"] for r in same),
                      "speedup": round(statistics.median(r["speedup"] for r in same), 2),
                      "round_speedups": [r["speedup"] for r in same]}
                     for same in _by_key(rounds, "ratios", RATIO_KEY)]
    return merged_rows, merged_ratios


def main() -> int:
    """Run the benchmark and print the result."""
    args = parse_args()
    W = import_workload(args.peers_dir)
    load0 = os.getloadavg()[0]
    import torch

    rounds = []
    for number in range(args.rounds):
        if args.rounds > 1:
            log(f"round {number + 1} of {args.rounds}")
        rounds.append(one_round(W, args))
    rows, merged_ratios = over_rounds(rounds)
    res = {"toolkit": "asr", "workload": W.fingerprint(W.make_workload()), "max_decode_steps": W.MAX_DECODE_STEPS,
           "beam_utterances": list(range(W.N_BEAM_UTTS)), "rows": rows, "ratios": merged_ratios,
           "decode_cpu_util": statistics.median(r["decode_cpu_util"] for r in rounds), "rounds": rounds,
           "versions": {"torch": torch.__version__, "python": platform.python_version()},
           "loadavg_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)]}
    if args.json:
        print(json.dumps(res))
    else:
        print_table(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
