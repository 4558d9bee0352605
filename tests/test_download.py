"""`asr download`: fetch from a local HTTP server, resume after a dropped connection, checksums, safe unpacking."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from asr.cli import main
from asr.download import Archive, DownloadError, download_corpus
from asr.recipe import load_recipe


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A .tar.gz holding `files` (name -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Server:
    """Serves `files` (path -> bytes) with Range support; `drop_after` cuts the next response short."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_after: int | None = None
        self.ranges: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if outer.drop_after is not None:
                    body, outer.drop_after = body[: outer.drop_after], None
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


LAYOUT = {"LibriSpeech/dev-clean/1/2/1-2.trans.txt": b"1-2-0000 HELLO\n",
          "LibriSpeech/dev-clean/1/2/1-2-0000.flac": bytes(range(256)) * 400}


def test_download_unpacks_once_and_removes_the_archive(server, tmp_path):
    data = tar_gz(LAYOUT)
    server.files["/dev-clean.tar.gz"] = data
    parts = {"dev-clean": Archive(f"{server.url}/dev-clean.tar.gz", hashlib.sha256(data).hexdigest())}
    out = download_corpus(parts, ["dev-clean"], tmp_path, progress=False)
    for name, content in LAYOUT.items():
        assert (out / name).read_bytes() == content
    assert not (tmp_path / "dev-clean.tar.gz").exists() and (tmp_path / ".dev-clean.done").is_file()
    download_corpus(parts, ["dev-clean"], tmp_path, progress=False)  # done: no second request
    assert server.ranges == [None]


def test_a_dropped_download_resumes_where_it_stopped(server, tmp_path):
    data = tar_gz(LAYOUT)
    server.files["/a.tar.gz"] = data
    parts = {"a": Archive(f"{server.url}/a.tar.gz", hashlib.sha256(data).hexdigest())}
    server.drop_after = len(data) // 2
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download_corpus(parts, ["a"], tmp_path, progress=False)
    assert (tmp_path / "a.tar.gz.part").stat().st_size == len(data) // 2
    download_corpus(parts, ["a"], tmp_path, progress=False)
    assert server.ranges == [None, f"bytes={len(data) // 2}-"]
    assert (tmp_path / "LibriSpeech/dev-clean/1/2/1-2.trans.txt").read_bytes() == b"1-2-0000 HELLO\n"


def test_wrong_checksum_removes_the_file_and_says_so(server, tmp_path):
    server.files["/a.tar.gz"] = tar_gz(LAYOUT)
    parts = {"a": Archive(f"{server.url}/a.tar.gz", "0" * 64)}
    with pytest.raises(DownloadError, match="SHA-256 .* is not the expected 0000"):
        download_corpus(parts, ["a"], tmp_path, progress=False)
    assert not any(tmp_path.glob("a.tar.gz*")) and not (tmp_path / ".a.done").exists()


def test_members_leaving_the_folder_are_refused(server, tmp_path):
    server.files["/evil.tar.gz"] = tar_gz({"../outside.txt": b"x"})
    with pytest.raises(DownloadError, match="cannot be unpacked"):
        download_corpus({"evil": Archive(f"{server.url}/evil.tar.gz")}, ["evil"], tmp_path / "in", progress=False)
    assert not (tmp_path / "outside.txt").exists()


def test_missing_url_and_unknown_part_are_clear_errors(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download_corpus({"a": Archive(f"{server.url}/nothing.tar.gz")}, ["a"], tmp_path, progress=False)
    with pytest.raises(DownloadError, match="unknown part.*b; parts: a"):
        download_corpus({"a": Archive(f"{server.url}/a.tar.gz")}, ["b"], tmp_path, progress=False)


def test_cli_lists_parts_and_refuses_licensed_corpora(capsys, tmp_path):
    assert main(["download", "librispeech", "--out", str(tmp_path), "--parts", "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert "train-clean-100\thttps://www.openslr.org/resources/12/train-clean-100.tar.gz" in listed
    _, module = load_recipe("librispeech")
    assert set(module.DEFAULT_PARTS) <= set(module.DOWNLOADS)
    assert all(len(a.sha256) == 64 for a in module.DOWNLOADS.values())
    assert main(["download", "timit", "--out", str(tmp_path)]) == 1
    assert "licensed" in capsys.readouterr().err
    assert not any(Path(tmp_path).iterdir())
