"""Run `asr.train.fit` under torchrun and record, per rank, the utterance ids of each epoch and the
final parameters (the DDP test compares them across ranks)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import asr.train as train
from asr.config import load_config


def main(config: str, dump_dir: str) -> None:
    rank = int(__import__("os").environ["RANK"])
    seen: list[list[str]] = []
    models = []
    make_loader, build_model = train._make_train_loader, train.build_model

    def recording_loader(*args, **kwargs):
        loader = make_loader(*args, **kwargs)
        iter_from = loader.iter_from

        def iter_recording(position):
            seen.append([])
            for batch in iter_from(position):
                seen[-1].extend(batch.ids)
                yield batch

        loader.iter_from = iter_recording
        return loader

    def capturing_build(*args, **kwargs):
        models.append(build_model(*args, **kwargs))
        return models[-1]

    train._make_train_loader, train.build_model = recording_loader, capturing_build
    train.fit(load_config(train.ExperimentConfig, config))
    Path(dump_dir).mkdir(parents=True, exist_ok=True)
    params = {k: v.detach().clone() for k, v in models[0].state_dict().items()}
    torch.save({"ids": seen, "params": params}, Path(dump_dir) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
