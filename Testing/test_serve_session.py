"""The web panel's session without a browser: what may be opened, what an upload must pass, one run at a
time, and downloads that carry the exact output grid (``JointSRSegModule.web_session`` on a real MRML
scene), plus the ``jointsrseg serve`` command's one-line refusals."""

from __future__ import annotations

import builtins
import json
import sys

import numpy as np
import pytest
from conftest import ROOT, SAMPLE

sys.path[:0] = [str(ROOT / "JointSRSeg")]

import slicer  # noqa: E402
from JointSRSegModule.web_session import DataFolder, WebSession, first_line, safe_file_name  # noqa: E402

from JointSRSegLib.cli import main  # noqa: E402
from JointSRSegLib.errors import InputError  # noqa: E402
from JointSRSegLib.geometry import subdivide_grid  # noqa: E402
from JointSRSegLib.io import read_volume, write_volume  # noqa: E402
from JointSRSegLib.volume import Volume  # noqa: E402

SAMPLE_FILE = SAMPLE / "ds000011_sub-01_inplaneT2.nii.gz"


def small(value: float = 200.0) -> Volume:
    i, j, k = np.meshgrid(np.arange(16), np.arange(12), np.arange(5), indexing="ij")
    array = (value + 50 * np.sin(i / 2.0) + 5 * j + 20 * k).astype(np.float32)[None]
    direction = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    return Volume(array, (1.0, 0.9, 4.0), (10.0, -20.0, 30.0), direction, source="small")


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    write_volume(small(), root / "a.nii.gz")
    write_volume(small(), root / "sub" / "b.nrrd")
    write_volume(small(), tmp_path / "outside.nii.gz")
    (root / "link.nii.gz").symlink_to(tmp_path / "outside.nii.gz")  # leads outside: never listed
    (root / "notes.txt").write_text("not a volume")
    return root


@pytest.fixture
def session(data_dir):
    s = WebSession(slicer.vtkMRMLScene(), data_dir, max_upload_mb=1)
    yield s
    s.close()


def test_data_folder_lists_only_its_own_volumes(data_dir):
    assert DataFolder(data_dir).files() == ["a.nii.gz", "sub/b.nrrd"]
    folder = DataFolder(data_dir)
    assert folder.resolve("sub/b.nrrd") == (data_dir / "sub" / "b.nrrd").resolve()
    for name in ("../outside.nii.gz", str(data_dir.parent / "outside.nii.gz"), "link.nii.gz", "notes.txt",
                 "sub/../../outside.nii.gz"):
        with pytest.raises(InputError, match="is not a volume in the data folder"):
            folder.resolve(name)
    with pytest.raises(InputError, match="no data folder was given"):
        DataFolder(None).resolve("a.nii.gz")


def test_upload_limits_and_reader_errors_name_the_file(session):
    with pytest.raises(InputError) as raised:
        session.load_upload("../../etc/big.nii.gz", b"\0" * (2 * 1024 * 1024))
    assert str(raised.value) == "big.nii.gz: is 2 MB; uploads are limited to 1 MB (--max-upload-mb)"
    with pytest.raises(InputError, match=r"^script.sh: is not a volume file; upload one of \.nii\.gz"):
        session.load_upload("script.sh", b"#!/bin/sh\n")
    with pytest.raises(InputError) as raised:
        session.load_upload("bad.nii.gz", b"this is not a NIfTI file")
    message = str(raised.value)
    assert message.startswith("bad.nii.gz: ") and "\n" not in message and "jointsrseg-serve" not in message
    assert session.input_node is None
    assert safe_file_name("..\\..\\x y$.nii.gz") == "x_y_.nii.gz" and safe_file_name(".hidden") == "hidden"


def test_upload_reads_with_the_library_reader_and_keeps_geometry(session, tmp_path):
    path = write_volume(small(), tmp_path / "up.nrrd")
    node = session.load_upload("up.nrrd", path.read_bytes())
    assert node.GetName() == "up"
    from JointSRSegModule import nodes

    assert nodes.node_grid(node).almost_equal(small().grid, 1e-5)
    assert session.input_summary() == "up: 16 × 12 × 5 voxels, 1 × 0.9 × 4 mm"


def test_one_run_at_a_time_and_downloads_on_the_exact_grid(session):
    session.load_data_file("a.nii.gz")
    empty = WebSession(slicer.vtkMRMLScene())
    with pytest.raises(InputError, match="load a volume first"):
        empty.start("bspline", ("sr",), 4, "through-plane")
    empty.close()
    assert not empty._work.exists()
    session.start("nearest", ("sr",), 4, "through-plane")
    with pytest.raises(InputError, match="a run is in progress"):
        session.start("nearest", ("sr",), 4, "through-plane")
    with pytest.raises(InputError, match="a run is in progress"):
        session.load_sample()
    assert session.run.wait(120)
    outputs = session.finish()
    assert set(outputs) == {"sr"} and session.run is None
    assert [d.file for d in session.downloads("nrrd")] == ["a_sr.nrrd", "a_report.json"]
    payload = session.download_bytes("sr", "nii.gz")
    path = session._work / "check.nii.gz"
    path.write_bytes(payload)
    sr = read_volume(path)
    assert sr.grid.almost_equal(subdivide_grid(small().grid, 4, 2), 1e-5)
    report = json.loads(session.download_bytes("report", "nii.gz"))
    assert report["model"]["id"] == "nearest" and report["outputs"]["sr"]["size"] == [16, 12, 20]
    for key, fmt in (("../../x", "nii.gz"), ("sr", "exe")):
        with pytest.raises(InputError):
            session.download_bytes(key, fmt)
    assert session.legend() == {"uncertainty": None, "segments": []}


def test_sample_is_the_bundled_thick_slice_scan(session):
    node = session.load_sample()
    assert node.GetName() == "T2 5mm"
    assert session.input_summary() == "T2 5mm: 128 × 128 × 30 voxels, 1.5625 × 1.5625 × 5 mm"
    assert read_volume(SAMPLE_FILE).shape == (128, 128, 30)


def test_first_line_is_one_line():
    assert first_line(InputError("f.nii", "bad\nmore")) == "f.nii: bad"
    assert first_line(RuntimeError("boom\ntrace")) == "RuntimeError: boom"


def test_serve_command_refusals_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["serve", "--data-dir", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().endswith("missing: is not a folder (--data-dir)")
    assert main(["serve", "--port", "70000"]) == 2
    assert "is not a TCP port" in capsys.readouterr().err
    real_import = builtins.__import__

    def no_trame(name, *args, **kwargs):
        if name.startswith("trame"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("trame") else object())
    monkeypatch.setattr(builtins, "__import__", no_trame)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "jointsrseg: error: serve: needs trame, trame_slicer: pip install 'jointsrseg[slicer]'", err


def test_websocket_messages_above_the_upload_limit_are_refused_before_allocation():
    """A client that skips the page's size check still cannot make the server allocate more than the
    upload limit: wslink's 4 GB allowance for an authenticated client is capped."""
    msgpack = pytest.importorskip("msgpack")
    from JointSRSegModule.serve import cap_websocket_messages
    from wslink import chunking

    cap_websocket_messages(4096)
    try:
        unchunker = chunking.UnChunker()
        unchunker.set_max_message_size(4 * 1024**3)  # what wslink grants after the hello
        small = msgpack.packb({"file": b"x" * 1000})
        chunks = chunking.generate_chunks(small, 0)
        assert [unchunker.process_chunk(c) for c in chunks][-1] == {"file": b"x" * 1000}
        large = next(chunking.generate_chunks(msgpack.packb({"file": b"x" * 10000}), 2048))
        with pytest.raises(ValueError, match="exceeds the allocation limit"):
            unchunker.process_chunk(large)
        assert not unchunker.pending_messages
    finally:
        cap_websocket_messages(4 * 1024**3)  # this process's later servers get wslink's own allowance
