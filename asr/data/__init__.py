"""Data: manifests, Kaldi import, validation, WebDataset shards and the streaming loader.

    manifest.py  Utterance, read/write JSON Lines manifests
    kaldi.py     Kaldi data directory -> utterances
    validate.py  every fault of a manifest in one report
    shards.py    manifest -> tar shards + index
    sources.py   what the loader reads (shard URLs, index, directory, manifest)
    samples.py   per-sample steps: read tar members, filter, decode, tokenise
    batching.py  shuffle buffer, duration buckets, padding into a Batch
    loader.py    the pipeline split over ranks and workers: make_loader
"""

from asr.data.batching import Batch
from asr.data.kaldi import KaldiError, import_kaldi_dir
from asr.data.loader import LoaderConfig, StreamingLoader, make_loader
from asr.data.manifest import ManifestError, Utterance, read_manifest, write_manifest
from asr.data.shards import ShardError, ShardIndex, read_index, write_shards
from asr.data.validate import ValidationReport, validate_manifest

__all__ = [
    "Batch",
    "KaldiError",
    "LoaderConfig",
    "ManifestError",
    "ShardError",
    "ShardIndex",
    "StreamingLoader",
    "Utterance",
    "ValidationReport",
    "import_kaldi_dir",
    "make_loader",
    "read_index",
    "read_manifest",
    "validate_manifest",
    "write_manifest",
    "write_shards",
]
