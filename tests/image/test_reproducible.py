"""Reproducibility, cheaply enough for every CI run: the image's layer is a function of its
root filesystem alone. Unpacking the built archive and packing the tree again gives the
same layer digest, so nothing of the build's time, order or machine is in the bytes.
(Two full cold builds giving one digest is measured by hand: see image/README.md.)"""

from __future__ import annotations

import datetime

import pytest
from imagefs import read_archive
from imgbuild import oci

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_repacking_the_unpacked_image_gives_the_same_digest(built, image_root, tmp_path):
    manifest, config, _ = read_archive(built.archive)
    (layer,) = manifest["layers"]
    created = config["created"]
    source_date = int(datetime.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp())
    again = oci.write_layer(image_root, str(tmp_path / "layer.tar.gz"), source_date)
    assert again.diff_id == config["rootfs"]["diff_ids"][0]
    assert again.digest == layer["digest"] and again.size == layer["size"]
    image = oci.assemble(again, created=created, entrypoint=config["config"]["Entrypoint"],
                         env=config["config"]["Env"], labels=config["config"]["Labels"],
                         history=config["history"][0]["created_by"])
    assert image.digest == built.digest
