from __future__ import annotations

import pytest
import torch

from asr.checkpoint import CheckpointError, average_state_dicts, load_checkpoint, load_first_good, save_checkpoint


def test_save_is_atomic_and_loads_weights_only(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {"a": 1}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left behind
    ck = load_checkpoint(path)
    assert ck["config"] == {"a": 1} and torch.equal(ck["model"]["w"], torch.ones(3))


def test_truncated_checkpoint_is_reported_and_skipped(tmp_path):
    good, bad = tmp_path / "good.pt", tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.zeros(2)}}, good)
    save_checkpoint({"model": {"w": torch.ones(2)}}, bad)
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"last.pt: unreadable checkpoint \(RuntimeError: [^\n.]*zip[^\n.]*\)$"):
        load_checkpoint(bad)
    path, ck = load_first_good([bad, good])
    assert path == good and torch.equal(ck["model"]["w"], torch.zeros(2))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "model": {}, "obj": object()}, path)
    with pytest.raises(CheckpointError, match="unreadable") as err:
        load_checkpoint(path)
    # One line naming the file and the refusal, not torch's dozen lines of advice.
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)) and "weights-only loading refused" in message
    assert len(message) - len(str(path)) < 200


def test_a_foreign_pickle_is_refused_without_torch_warnings(tmp_path, recwarn):
    import pickle

    path = tmp_path / "foreign.pt"
    path.write_bytes(pickle.dumps({"model": {}}, protocol=4))  # torch warns about protocol 4 before refusing
    with pytest.raises(CheckpointError, match="foreign.pt: unreadable checkpoint"):
        load_checkpoint(path)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_average(tmp_path):
    for i in range(3):
        save_checkpoint({"model": {"w": torch.full((2,), float(i)), "n": torch.tensor(i)}}, tmp_path / f"{i}.pt")
    avg = average_state_dicts([tmp_path / f"{i}.pt" for i in range(3)])
    assert torch.allclose(avg["w"], torch.ones(2)) and avg["n"].item() == 2
