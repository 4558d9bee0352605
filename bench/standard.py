"""The peers' standard LAS workload and our model at the peers' size, shared by the benchmarks.

The workload (16 utterances of 500-800 frames of 80-dim features, 60-100 tokens, vocabulary 30)
comes from `workload.py` in the peer benchmark folder, which also times ESPnet and SpeechBrain.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PEERS_DIR = REPO.parent / "shared" / "bench" / "peers"


def import_workload(peers_dir: str | Path = DEFAULT_PEERS_DIR):
    """The peers' workload module (imported from their folder, never copied)."""
    sys.path.insert(0, str(peers_dir))
    import workload

    return workload


# Two forms of the same sizes. "las": the LAS paper's (frames concatenated by the pyramid, the
# attention queried by the state after the step; our recipes' default). "espnet": the peers' ESPnet
# model's (blstmp: every 2nd frame kept, so the encoder has ESPnet's 4,931,520 parameters; the
# attention queried by the state before the step, so beam search attends once per parent).
MODELS = {"las": {"subsample": "concat", "query": "current"}, "espnet": {"subsample": "skip", "query": "previous"}}


def standard_las(W, *, ctc_weight: float = 0.0, impl: str = "auto", model: str = "las"):
    """3 x BiLSTM 320 + projection 320 (x4), 1-layer LSTM 320 speller, location attention 10 x 201,
    in the form `model` (a key of MODELS)."""
    from asr.models import AttentionConfig, LASConfig, ListenerConfig, SpellerConfig, build_las

    form = MODELS[model]
    cfg = LASConfig(
        listener=ListenerConfig(layers=3, hidden=320, reduce=(1, 2, 2), projection=320, dropout=0.0, impl=impl,
                                subsample=form["subsample"]),
        speller=SpellerConfig(embed_dim=320, hidden=320, layers=1, dropout=0.0, query=form["query"],
                              attention=AttentionConfig(kind="location", dim=320, conv_channels=10, conv_kernel=201)),
        ctc_weight=ctc_weight, label_smoothing=0.0)
    # Token ids follow the workload: 0 = blank/padding, 29 = [GO] and [EOS].
    return build_las(cfg, W.VOCAB, input_dim=W.FEAT_DIM, blank_id=W.BLANK, go_id=W.EOS, eos_id=W.EOS, pad_id=W.BLANK)


def workload_batch(W, device):
    """(feats (B, T, 80), feature lengths, targets (B, U), target lengths) of the workload, padded."""
    import torch

    w = W.make_workload()
    feats = torch.zeros(W.BATCH, max(w["ilens"]), W.FEAT_DIM)
    targets = torch.full((W.BATCH, max(w["olens"])), W.BLANK, dtype=torch.long)
    for i, (f, t) in enumerate(zip(w["feats"], w["targets"])):
        feats[i, : f.shape[0]] = torch.from_numpy(f)
        targets[i, : t.shape[0]] = torch.from_numpy(t)
    ilens, olens = torch.tensor(w["ilens"]), torch.tensor(w["olens"])
    return w, tuple(t.to(device) for t in (feats, ilens, targets, olens))


def suppress_eos(model, W) -> None:
    """The peers' fixed-length decoding protocol: an [EOS] bias of -1e4, so every search runs the
    full W.MAX_DECODE_STEPS steps whatever the random weights would have ended with."""
    import torch

    with torch.no_grad():
        model.speller.output.bias[W.EOS] = -1.0e4
