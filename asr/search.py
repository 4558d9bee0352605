"""Search over a model's speller: batched greedy decoding.

Search lives outside the model and only uses `model.speller.init_state` /
`model.speller.step` and the model's [GO]/[EOS] ids, so it works for any
decoder offering that interface.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn


@torch.no_grad()
def greedy_search(model: nn.Module, enc: Tensor, enc_lengths: Tensor, *, max_len_ratio: float = 1.0,
                  max_len: int | None = None) -> list[list[int]]:
    """Most likely token at each step for a batch of encodings (B, T, D) -> B token lists (no [GO]/[EOS]).

    Utterance b stops at [EOS] or after max(1, floor(max_len_ratio * enc_lengths[b])) tokens,
    capped by `max_len`; finished utterances leave the batch, so the loop always ends.
    """
    speller = model.speller
    b = enc.shape[0]
    lengths = enc_lengths.to(enc.device)
    limits = torch.clamp(torch.floor(lengths.double() * max_len_ratio), min=1).long()  # (B,)
    if max_len is not None:
        limits = limits.clamp(max=max(1, max_len))
    limits_cpu = limits.tolist()
    steps = max(limits_cpu) if b else 0
    state = speller.init_state(enc, lengths)
    tokens = torch.full((b,), model.go_id, dtype=torch.long, device=enc.device)
    active = list(range(b))  # original index of each row still decoding
    hyps: list[list[int]] = [[] for _ in range(b)]
    for _ in range(steps):
        log_probs, state = speller.step(state, tokens)
        best = log_probs.argmax(dim=-1)  # (N,)
        keep = []
        for row, (utt, tok) in enumerate(zip(active, best.tolist())):
            if tok == model.eos_id:
                continue
            hyps[utt].append(tok)
            if len(hyps[utt]) < limits_cpu[utt]:
                keep.append(row)
        if not keep:
            break
        if len(keep) < len(active):
            idx = torch.tensor(keep, device=enc.device)
            state, best = state.index_select(idx), best.index_select(0, idx)
            active = [active[r] for r in keep]
        tokens = best
    return hyps
