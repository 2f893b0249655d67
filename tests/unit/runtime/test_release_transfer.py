"""serve-model and fetch-model over localhost: round trip, tampering, traversal, retries."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time

import pytest

from ppml_runtime.__main__ import main
from ppml_runtime.contract import MODEL_FILES
from ppml_runtime.release.fetch import FetchError, fetch_model, parse_manifest
from ppml_runtime.release.server import open_server, wait_done

CONTENT = {
    "model.safetensors": os.urandom(300_000),
    "config.json": b'{"format": "ppml.dev/model-v1"}\n',
    "model-card.json": b'{"job": "unit"}\n',
    "README.md": b"# Model card\n",
}
SHA = hashlib.sha256(CONTENT["model.safetensors"]).hexdigest()


@pytest.fixture
def model_dir(tmp_path):
    directory = tmp_path / "owner" / "model"
    directory.mkdir(parents=True)
    for name, data in CONTENT.items():
        (directory / name).write_bytes(data)
    return directory


class Serving:
    """A real serve-model server on a free localhost port, waited for in a thread."""

    def __init__(self, directory, timeout: float = 30.0, port: int = 0) -> None:
        self.server = open_server(directory, "127.0.0.1", port)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._wait, args=(timeout,), daemon=True)
        self.thread.start()

    def _wait(self, timeout: float) -> None:
        self.exit_code = wait_done(self.server, timeout)

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)  # sent as written: no normalisation, no quoting
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self) -> int | None:
        if self.thread.is_alive():
            self.server.done.set()
        self.thread.join(10)
        return self.exit_code


@pytest.fixture
def serving(model_dir):
    started = Serving(model_dir)
    yield started
    started.stop()


def test_fetch_round_trips_every_file_and_ends_the_server(serving, tmp_path):
    dest = tmp_path / "analyst" / "claim" / "model"
    fetch_model(serving.url, dest, SHA, timeout=20)
    assert sorted(p.name for p in dest.iterdir()) == sorted(MODEL_FILES)
    assert {name: (dest / name).read_bytes() for name in MODEL_FILES} == CONTENT
    serving.thread.join(10)
    assert serving.exit_code == 0
    assert [p.name for p in dest.parent.iterdir()] == ["model"]  # no staging left behind


def test_manifest_lists_name_size_and_sha256(serving):
    status, body = serving.get("/manifest")
    assert status == 200
    assert json.loads(body) == {
        "files": [
            {"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for n, d in CONTENT.items()
        ]
    }


@pytest.mark.parametrize(
    ("altered", "message"),
    [
        pytest.param(
            b"# Model cart\n", r"README.md has sha256 .*not the manifest's", id="same size"
        ),
        pytest.param(b"# Model card, longer\n", "longer than the manifest's", id="longer"),
        pytest.param(b"# Model\n", "has 8 bytes, not the manifest's 13", id="shorter"),
    ],
)
def test_a_file_altered_after_the_manifest_is_refused(
    serving, model_dir, tmp_path, altered, message
):
    (model_dir / "README.md").write_bytes(altered)
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match=message):
        fetch_model(serving.url, dest, SHA, timeout=20)
    assert not dest.exists()
    assert list(tmp_path.glob(".dest*")) == []
    assert not serving.server.done.is_set()  # the server keeps waiting for a good fetch


def test_weights_other_than_the_reported_ones_are_refused(serving, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match=r"not the 0{64} the trainer reported"):
        fetch_model(serving.url, dest, "0" * 64, timeout=20)
    assert not dest.exists()


def test_an_existing_destination_is_never_overwritten(serving, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(FetchError, match="exists already"):
        fetch_model(serving.url, dest, SHA, timeout=20)
    assert [p.name for p in dest.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize(
    "path",
    [
        "/files/../model-card.json",
        "/files/..%2f..%2fsecret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/secret.txt",
        "/files/escape.json",
        "/files/",
        "/files/model.safetensors/../../secret.txt",
        "/../secret.txt",
        "/secret.txt",
        "/",
    ],
)
def test_nothing_but_the_model_files_is_served(model_dir, path):
    (model_dir.parent / "secret.txt").write_text("owner data")
    (model_dir / "secret.txt").write_text("owner data")
    server = Serving(model_dir)
    try:
        status, body = server.get(path)
    finally:
        server.stop()
    assert status == 404
    assert b"owner data" not in body


def test_a_linked_model_file_is_not_served(tmp_path, model_dir):
    (tmp_path / "outside.json").write_text("owner data")
    (model_dir / "model-card.json").unlink()
    (model_dir / "model-card.json").symlink_to(tmp_path / "outside.json")
    server = Serving(model_dir)
    try:
        assert server.get("/files/model-card.json")[0] == 404
        names = [f["name"] for f in json.loads(server.get("/manifest")[1])["files"]]
    finally:
        server.stop()
    assert "model-card.json" not in names


def test_the_server_exits_1_when_nobody_fetches(model_dir):
    server = Serving(model_dir, timeout=0.3)
    server.thread.join(10)
    assert server.exit_code == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_fetch_retries_until_the_server_comes_up(model_dir, tmp_path):
    port = free_port()
    dest = tmp_path / "dest"
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            fetch_model(f"http://127.0.0.1:{port}", dest, SHA, timeout=30)
        except BaseException as err:
            errors.append(err)

    fetcher = threading.Thread(target=fetch, daemon=True)
    fetcher.start()
    time.sleep(1.5)
    server = Serving(model_dir, port=port)
    fetcher.join(30)
    assert (
        errors == [] and (dest / "model.safetensors").read_bytes() == CONTENT["model.safetensors"]
    )
    server.thread.join(10)
    assert server.exit_code == 0


def test_fetch_gives_up_at_its_timeout(tmp_path):
    started = time.monotonic()
    with pytest.raises(FetchError, match="failed"):
        fetch_model(f"http://127.0.0.1:{free_port()}", tmp_path / "dest", SHA, timeout=1.5)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        pytest.param({"files": "x"}, "no list of files", id="not a list"),
        pytest.param(
            {"files": [{"name": "../etc/passwd", "size": 1, "sha256": "0" * 64}]},
            "names '../etc/passwd'",
            id="a name outside the model files",
        ),
        pytest.param(
            {"files": [{"name": "config.json", "size": 1, "sha256": "0" * 64}] * 2},
            "twice",
            id="a name twice",
        ),
        pytest.param(
            {"files": [{"name": "config.json", "size": -1, "sha256": "0" * 64}]},
            "size -1",
            id="a negative size",
        ),
        pytest.param(
            {"files": [{"name": "config.json", "size": 1, "sha256": "abc"}]},
            "sha256 'abc'",
            id="a malformed digest",
        ),
        pytest.param(
            {"files": [{"name": "config.json", "size": 1, "sha256": "0" * 64}]},
            "lacks model.safetensors",
            id="no weights",
        ),
    ],
)
def test_a_bad_manifest_is_refused(manifest, message):
    with pytest.raises(FetchError, match=message):
        parse_manifest(manifest)


def test_fetch_model_role_exits_1_with_one_line_error(serving, tmp_path, caplog):
    dest = tmp_path / "dest"
    argv = ["fetch-model", "--url", serving.url, "--dest", str(dest)]
    assert main([*argv, "--expect-sha256", "f" * 64, "--timeout", "10"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "trainer reported" in errors[0]
    assert main([*argv, "--expect-sha256", SHA, "--timeout", "10"]) == 0
    assert (dest / "config.json").read_bytes() == CONTENT["config.json"]


def test_serve_model_role_refuses_a_directory_without_model_files(tmp_path):
    argv = ["serve-model", "--dir", str(tmp_path), "--port", "0", "--timeout", "1"]
    assert main(argv) == 1
