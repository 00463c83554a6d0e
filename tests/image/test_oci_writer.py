"""The OCI writer is deterministic: same tree, same bytes, whatever the files' creation
order or times past the source date (no root needed)."""

from __future__ import annotations

import gzip
import os
import tarfile
import time

from imgbuild import oci

CLAMP = 1_700_000_000


def _tree(root, order):
    os.makedirs(root / "usr" / "bin")
    os.makedirs(root / "tmp")
    files = {"usr/bin/tool": b"#!/bin/sh\n", "usr/lib.so": b"\x7fELF" + b"x" * 5000,
             "tmp/scratch": b"left by the build", "etc/conf": b"a=1\n"}
    for name in (sorted(files) if order else sorted(files, reverse=True)):
        os.makedirs(root / os.path.dirname(name), exist_ok=True)
        (root / name).write_bytes(files[name])
    os.chmod(root / "usr/bin/tool", 0o4755)
    os.symlink("usr/bin", root / "bin")
    os.link(root / "usr/lib.so", root / "usr/lib.so.1")
    old = CLAMP - 86400
    for top, dirs, names in os.walk(root):
        for name in dirs + names:
            os.utime(os.path.join(top, name), (old, old), follow_symlinks=False)
    # directories were written by the build, after the source date; the second build ran
    # later still
    built = CLAMP + 60 if order else time.time()
    for top, _dirs, _ in os.walk(root):
        os.utime(top, (built, built))


def test_same_tree_same_digest(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a, order=True)
    _tree(b, order=False)
    la = oci.write_layer(str(a), str(tmp_path / "a.tar.gz"), CLAMP)
    lb = oci.write_layer(str(b), str(tmp_path / "b.tar.gz"), CLAMP)
    assert (la.digest, la.diff_id, la.size) == (lb.digest, lb.diff_id, lb.size)
    kw = dict(created="2023-11-14T22:13:20Z", entrypoint=["python3"], env=["PATH=/bin"],
              labels={"k": "v"}, history="test")
    assert oci.assemble(la, **kw).digest == oci.assemble(lb, **kw).digest


def test_layer_entries_sorted_clamped_numeric_and_tmp_emptied(tmp_path):
    root = tmp_path / "r"
    _tree(root, order=False)
    layer = oci.write_layer(str(root), str(tmp_path / "l.tar.gz"), CLAMP)
    with open(layer.path, "rb") as f:
        assert f.read(8)[4:8] == b"\0\0\0\0", "gzip header carries a timestamp"
    with tarfile.open(layer.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=os.fsencode)
    assert "tmp" in names and "tmp/scratch" not in names
    assert all(m.mtime <= CLAMP and m.uname == "" and m.gname == "" for m in members)
    by = {m.name: m for m in members}
    assert by["bin"].issym() and by["bin"].linkname == "usr/bin"
    assert by["usr/lib.so.1"].islnk() and by["usr/lib.so.1"].linkname == "usr/lib.so"
    assert by["usr/bin/tool"].mode == 0o4755
    with gzip.open(layer.path) as raw:
        assert len(raw.read()) == layer.uncompressed_size
    assert layer.largest[0] == (5004, "/usr/lib.so")


def test_archive_is_an_oci_layout_with_one_manifest(tmp_path):
    root = tmp_path / "r"
    _tree(root, order=True)
    layer = oci.write_layer(str(root), str(tmp_path / "l.tar.gz"), CLAMP)
    image = oci.assemble(layer, created="2023-11-14T22:13:20Z", entrypoint=["python3"],
                         env=["PATH=/bin"], labels={}, history="test")
    out = tmp_path / "image.oci.tar"
    oci.write_archive(image, str(out), mtime=CLAMP, ref_name="0.1.0")
    first = out.read_bytes()
    oci.write_archive(image, str(out), mtime=CLAMP, ref_name="0.1.0")
    assert out.read_bytes() == first
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert {"oci-layout", "index.json", "blobs/" + image.digest.replace(":", "/"),
            "blobs/" + layer.digest.replace(":", "/")} <= set(names)
