"""core.data.batches.make_tf_dataset: parallel decode, batching, shapes, same pixels as ingestion."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import make_class_folders, patterned_image
from PIL import Image

from core.data import batches, images
from core.data.datasets import ingest
from core.errors import ConfigError

tf = pytest.importorskip("tensorflow")


def test_batches_of_uint8_images_and_int32_labels(small_dataset, studio_home):
    index = ingest(small_dataset).index
    ds = batches.make_tf_dataset(index["path"], index["label_index"], 40, 8)
    assert ds.element_spec[0].shape.as_list() == [None, 40, 40, 3]
    assert ds.element_spec[0].dtype == tf.uint8 and ds.element_spec[1].dtype == tf.int32
    got = list(ds.as_numpy_iterator())
    assert [len(y) for _x, y in got] == [8, 8, 8, 8, 4]
    x = np.concatenate([b[0] for b in got])
    y = np.concatenate([b[1] for b in got])
    assert x.dtype == np.uint8 and x.shape == (36, 40, 40, 3)
    assert y.tolist() == index["label_index"].tolist()  # order kept without shuffle
    for i in (0, 17, 35):  # identical pixels to load_resized, the one resize rule
        np.testing.assert_array_equal(x[i], images.load_resized(index["path"][i], 40))


def test_images_only_when_labels_is_none(small_dataset, studio_home):
    paths = ingest(small_dataset).index["path"].tolist()
    ds = batches.make_tf_dataset(paths, None, 24, 16)
    got = list(ds.as_numpy_iterator())
    assert all(isinstance(b, np.ndarray) for b in got)
    assert sum(len(b) for b in got) == 36 and got[0].shape[1:] == (24, 24, 3)


def test_shuffle_is_a_seeded_permutation(small_dataset, studio_home):
    index = ingest(small_dataset).index
    paths, labels = index["path"].tolist(), index["label_index"].tolist()

    def first_epoch(seed: int) -> list[int]:
        ds = batches.make_tf_dataset(paths, labels, 16, 36, shuffle=True, seed=seed)
        return next(iter(ds))[1].numpy().tolist()

    a, b = first_epoch(1), first_epoch(1)
    assert a == b and sorted(a) == sorted(labels) and a != labels
    # Images still travel with their own label after shuffling.
    ds = batches.make_tf_dataset(paths, labels, 16, 36, shuffle=True, seed=1)
    x, y = next(iter(ds))
    means = {lab: [] for lab in set(labels)}
    for img, lab in zip(x.numpy(), y.numpy()):
        means[int(lab)].append(img.reshape(-1, 3).mean(0))
    for lab, values in means.items():
        assert np.std(np.array(values), axis=0).max() < 10  # one colour per class


def test_every_image_that_passed_ingestion_decodes_in_the_pipeline(tmp_path, studio_home):
    """All the awkward formats and modes of section 2 through ingest and then tf.data."""
    root = make_class_folders(tmp_path / "d", {"a": 3, "b": 3})
    extra = tmp_path / "d" / "a"

    def save(img: Image.Image, name: str, fmt: str, **kw) -> None:
        img.save(extra / name, fmt, **kw)

    base = patterned_image(0, 99, 40)
    exif = Image.Exif()
    exif[0x0112] = 8
    save(base, "rotated.jpg", "JPEG", exif=exif)
    save(base.convert("CMYK"), "cmyk.jpg", "JPEG")
    save(base.convert("L"), "grey.png", "PNG")
    save(base.convert("LA"), "grey_alpha.png", "PNG")
    save(base.convert("P"), "palette.gif", "GIF", transparency=0)
    save(base.convert("RGBA"), "rgba.webp", "WEBP")
    save(base, "phone.jpg", "MPO", save_all=True, append_images=[base])
    save(base, "multi.tiff", "TIFF", save_all=True, append_images=[base])
    save(base, "bitmap.bmp", "BMP")
    wide = np.linspace(0, 65535, 40 * 30).astype(np.uint16).reshape(30, 40)
    Image.fromarray(wide).save(extra / "sixteen_bit.png")
    big = patterned_image(0, 98, 700)
    save(big, "big.jpg", "JPEG", quality=90)
    (extra / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 20)
    ds = ingest(root)
    assert [r["file"] for r in ds.report.rejected] == ["a/broken.jpg"]
    index = ds.index
    assert len(index) == 6 + 11
    ds = batches.make_tf_dataset(index["path"], index["label_index"], 32, 5)
    seen = sum(len(y) for _x, y in ds.as_numpy_iterator())
    assert seen == len(index)


def test_pipeline_reports_a_file_that_vanished_after_ingestion(tmp_path, studio_home):
    path = tmp_path / "x.png"
    patterned_image(0, 0).save(path)
    ds = batches.make_tf_dataset([str(path)], [0], 8, 1)
    path.unlink()
    with pytest.raises(tf.errors.OpError, match="file not found"):
        list(ds.as_numpy_iterator())


def test_bad_arguments_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="one label per path"):
        batches.make_tf_dataset(["a.png", "b.png"], [0], 8, 1)
    with pytest.raises(ConfigError, match="empty"):
        batches.make_tf_dataset([], None, 8, 1)
    with pytest.raises(ConfigError, match="Batch size"):
        batches.make_tf_dataset(["a.png"], None, 8, 0)
    with pytest.raises(ConfigError, match="Image size"):
        batches.make_tf_dataset(["a.png"], None, 0, 1)


def test_pipeline_accepts_pathlike_and_numpy_labels(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        buf = io.BytesIO()
        patterned_image(i, i).save(buf, "PNG")
        p.write_bytes(buf.getvalue())
        paths.append(p)
    ds = batches.make_tf_dataset(paths, np.array([2, 1, 0], dtype=np.int64), 8, 3)
    _x, y = next(iter(ds))
    assert y.dtype == tf.int32 and y.numpy().tolist() == [2, 1, 0]
