"""VOC 2012 segmentation: the manual-dir builder, pad-to-size with ignore, and voc2012_fcn8s.

A tiny fake VOCdevkit (four JPEGs of different sizes, palette PNGs whose indices are the labels
0..20 and 255 while their palette colours are random) is built once per module and prepared
through ``jaxcv.data.prepare(..., manual_dir=...)``, as a user would with the real archive.
"""

import json
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from jaxcv import cli, data, experiments
from jaxcv.data import transforms as T
from jaxcv.data.builders import voc_segmentation as voc
from jaxcv.tasks.segmentation import SegmentationEvaluator

NAME = "voc/2012-segmentation"
# id -> (H, W, mode); "d" is a grayscale JPEG (the builder converts it to RGB).
IMAGES = {"a": (40, 56, "RGB"), "b": (37, 30, "RGB"), "c": (50, 80, "RGB"), "d": (20, 70, "L")}
SPLITS = {"train": ["a", "b"], "validation": ["c", "d"]}
VALUES = np.array([*range(21), 255], np.uint8)


def _write_devkit(root, seed=0):
    """A fake VOCdevkit/VOC2012 under ``root``; returns {id: labels (H, W) uint8}."""
    rng = np.random.default_rng(seed)
    voc_dir = root / "VOCdevkit" / "VOC2012"
    for sub in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass"):
        (voc_dir / sub).mkdir(parents=True)
    palette = rng.integers(0, 256, (256, 3)).astype(np.uint8).ravel().tolist()
    labels = {}
    for i, (image_id, (h, w, mode)) in enumerate(IMAGES.items()):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(voc_dir / "JPEGImages" / f"{image_id}.jpg")
        lab = rng.choice(VALUES, size=(h, w)).astype(np.uint8)
        lab[0, : VALUES.size] = np.roll(VALUES, i)  # every value in every image
        png = Image.fromarray(lab, mode="P")
        png.putpalette(palette)
        png.save(voc_dir / "SegmentationClass" / f"{image_id}.png")
        labels[image_id] = lab
    for split, list_name in voc.SPLIT_LISTS.items():
        path = voc_dir / "ImageSets" / "Segmentation" / f"{list_name}.txt"
        path.write_text("".join(f"{i}\n" for i in SPLITS[split]))
    return labels


@pytest.fixture(scope="module")
def devkit(tmp_path_factory):
    """``(manual_dir, data_dir, labels)``: the fake devkit, prepared from its folder."""
    manual = tmp_path_factory.mktemp("voc_manual")
    labels = _write_devkit(manual)
    data_dir = tmp_path_factory.mktemp("voc_data")
    info = data.prepare(NAME, data_dir, manual_dir=manual)
    assert info.splits == {"train": 2, "validation": 2}
    return manual, str(data_dir), labels


def _raw_examples(data_dir, split):
    builder = tfds.builder(voc.JaxcvVoc2012Segmentation.name, data_dir=data_dir)
    return {ex["file_name"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def _decoded_jpeg(manual, image_id):
    raw = (manual / "VOCdevkit/VOC2012/JPEGImages" / f"{image_id}.jpg").read_bytes()
    return tf.io.decode_jpeg(raw, channels=3).numpy()


def test_builder_stores_palette_indices_and_the_original_jpeg(devkit):
    manual, data_dir, labels = devkit
    for split, ids in SPLITS.items():
        examples = _raw_examples(data_dir, split)
        assert sorted(examples) == sorted(ids)
        for image_id in ids:
            ex = examples[image_id]
            h, w, mode = IMAGES[image_id]
            assert ex["image"].shape == (h, w, 3) and ex["segmentation"].shape == (h, w, 1)
            np.testing.assert_array_equal(ex["segmentation"][..., 0], labels[image_id])
            if mode == "RGB":  # the JPEG bytes are stored as they are
                np.testing.assert_array_equal(ex["image"], _decoded_jpeg(manual, image_id))
            else:  # converted to RGB (and re-encoded): three equal channels
                assert np.abs(ex["image"].astype(int) - ex["image"][..., :1]).max() <= 2


def test_builder_reads_the_official_tar(devkit, tmp_path):
    manual, _, labels = devkit
    tar_dir = tmp_path / "manual"
    tar_dir.mkdir()
    with tarfile.open(tar_dir / voc.ARCHIVE, "w") as tar:
        tar.add(manual / "VOCdevkit", arcname="VOCdevkit")
    data.prepare(NAME, tmp_path / "data", manual_dir=tar_dir)
    ex = _raw_examples(str(tmp_path / "data"), "validation")["c"]
    np.testing.assert_array_equal(ex["segmentation"][..., 0], labels["c"])


def test_label_png_checks(tmp_path):
    bad = np.zeros((4, 5), np.uint8)
    bad[1, 2] = 30
    png = Image.fromarray(bad, mode="P")
    png.putpalette(list(range(256)) * 3)  # without one, Pillow renumbers the used indices
    png.save(tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"bad\.png.*found \[30\]"):
        voc.read_label_png(tmp_path / "bad.png")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode 'RGB'"):
        voc.read_label_png(tmp_path / "rgb.png")


def _nearest(labels, out_h, out_w):
    """NumPy reference of tf.image.resize(method='nearest') (half-pixel centres)."""
    h, w = labels.shape
    rows = np.minimum(np.floor((np.arange(out_h) + 0.5) * h / out_h).astype(int), h - 1)
    cols = np.minimum(np.floor((np.arange(out_w) + 0.5) * w / out_w).astype(int), w - 1)
    return labels[rows][:, cols]


def test_pipeline_pads_with_ignore_and_keeps_the_labels(devkit):
    manual, data_dir, labels = devkit
    mean, std = np.array(data.DATASETS[NAME].mean), np.array(data.DATASETS[NAME].std)
    ds = data.make_pipeline(
        NAME, "validation", 2, train=False, image_size=(56, 96), data_dir=data_dir
    )
    batch = next(iter(tfds.as_numpy(ds)))
    assert batch["image"].shape == (2, 56, 96, 3) and batch["image"].dtype == np.float32
    assert batch["segmentation"].shape == (2, 56, 96) and batch["segmentation"].dtype == np.int32
    for row, (h, w) in enumerate(batch["original_size"]):
        image_id = next(i for i in SPLITS["validation"] if IMAGES[i][:2] == (h, w))
        seg = batch["segmentation"][row]
        np.testing.assert_array_equal(seg[:h, :w], labels[image_id])  # 255 kept as ignore
        assert (seg[h:] == 255).all() and (seg[:, w:] == 255).all()
        image = batch["image"][row]
        assert (image[h:] == 0).all() and (image[:, w:] == 0).all()  # the mean colour
        if IMAGES[image_id][2] == "RGB":
            expected = (_decoded_jpeg(manual, image_id) / 255.0 - mean) / std
            np.testing.assert_allclose(image[:h, :w], expected, atol=1e-5)
    # Larger than the canvas: scaled down (aspect kept, labels nearest), then padded.
    ds = data.make_pipeline(
        NAME, "validation", 2, train=False, image_size=(32, 32), data_dir=data_dir
    )
    batch = next(iter(tfds.as_numpy(ds)))
    for row, (h, w) in enumerate(batch["original_size"]):
        image_id = next(i for i in SPLITS["validation"] if IMAGES[i][:2] == (h, w))
        scale = min(32 / h, 32 / w)
        fh, fw = round(h * scale), round(w * scale)
        seg = batch["segmentation"][row]
        np.testing.assert_array_equal(seg[:fh, :fw], _nearest(labels[image_id], fh, fw))
        assert (seg[fh:] == 255).all() and (seg[:, fw:] == 255).all()


def test_evaluation_ignores_the_padding(devkit):
    _, data_dir, labels = devkit
    ds = data.make_pipeline(
        NAME, "validation", 2, train=False, image_size=(56, 96), data_dir=data_dir
    )
    batch = next(iter(tfds.as_numpy(ds)))
    seg = batch["segmentation"]
    # Right inside the image, arbitrary (wrong) classes in the padding.
    pred = np.where(seg == 255, 7, seg).astype(np.int32)
    evaluator = SegmentationEvaluator(21)
    evaluator.update(batch, {"pred_segmentation": pred})
    result = evaluator.result()
    assert result["pixel_accuracy"] == result["mIoU"] == 1.0
    labelled = sum(int((labels[i] != 255).sum()) for i in SPLITS["validation"])
    assert evaluator.confusion.sum() == labelled


def test_train_batches_are_static_and_flips_keep_labels_aligned(devkit):
    _, data_dir, _ = devkit
    ds = data.make_pipeline(
        NAME, "train", 2, train=True, augment=True, image_size=(48, 64), data_dir=data_dir, seed=3
    )
    assert ds.element_spec["image"].shape.as_list() == [2, 48, 64, 3]
    assert ds.element_spec["segmentation"].shape.as_list() == [2, 48, 64]
    for batch in tfds.as_numpy(ds.take(4)):
        for row, (h, w) in enumerate(batch["original_size"]):
            seg = batch["segmentation"][row]
            # Padding stays at the bottom/right after the flip of the image itself.
            assert (seg[h:] == 255).all() and (seg[:, w:] == 255).all()
            assert np.isin(seg[:h, :w], VALUES).all()


def test_pad_to_size_unit():
    example = {
        "image": tf.ones((3, 4, 3), tf.float32),
        "segmentation": tf.constant(np.arange(12).reshape(3, 4), tf.int32),
        "boxes": tf.constant([[0.0, 0.0, 2.0, 3.0]]),
    }
    out = T.pad_to_size(example, (5, 6))
    np.testing.assert_array_equal(
        out["image"][..., 0].numpy(), np.pad(np.ones((3, 4)), ((0, 2), (0, 2)))
    )
    expected = np.pad(np.arange(12).reshape(3, 4), ((0, 2), (0, 2)), constant_values=255)
    np.testing.assert_array_equal(out["segmentation"].numpy(), expected)
    np.testing.assert_array_equal(out["boxes"].numpy(), [[0, 0, 2, 3]])
    # Scale 0.5: (3, 4) -> (round(1.5) = 2, 2), boxes scaled by (2/3, 1/2), padded to (3, 2).
    down = T.pad_to_size(example, (3, 2))
    np.testing.assert_allclose(down["boxes"].numpy(), [[0, 0, 1, 2]], rtol=1e-6)
    assert (down["segmentation"].numpy()[2] == 255).all()
    with pytest.raises(ValueError, match=r"\(H, W\) positive"):
        T.pad_to_size(example, (0, 4))


def test_mock_data_through_the_pipeline():
    with tfds.testing.mock_data(num_examples=4):
        info = data.get_info(NAME)
        ds = data.make_pipeline(NAME, "train", 2, train=True, augment=True, image_size=(48, 48))
        batch = next(iter(tfds.as_numpy(ds)))
    assert info.num_classes == 20 and info.class_names[0] == "aeroplane"
    assert batch["image"].shape == (2, 48, 48, 3) and batch["segmentation"].shape == (2, 48, 48)
    assert np.isin(batch["segmentation"], VALUES).all()


def test_not_prepared_errors_say_what_to_download(tmp_path, capsys):
    with pytest.raises(data.DatasetNotPreparedError) as error:
        data.make_pipeline(NAME, "train", 2, train=True, image_size=(32, 32), data_dir=tmp_path)
    message = str(error.value)
    for part in (repr(NAME), str(tmp_path), voc.ARCHIVE, "jaxcv data prepare", "'shapes/multi'"):
        assert part in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.DatasetNotPreparedError, match="does not exist or is empty"):
        data.prepare(NAME, tmp_path, manual_dir=empty)
    (empty / "notes.txt").write_text("not VOC")
    with pytest.raises(data.DatasetNotPreparedError, match=r"no VOC 2012.*notes\.txt"):
        data.prepare(NAME, tmp_path, manual_dir=empty)
    args = ["data", "prepare", NAME, "--data-dir", str(tmp_path), "--manual-dir", str(empty)]
    assert cli.main(args) == 2
    assert voc.ARCHIVE in capsys.readouterr().err
    with pytest.raises(ValueError, match="not built from a manual dir"):
        data.prepare("cifar10", tmp_path, manual_dir=empty)


def test_cli_prepares_from_the_manual_dir(devkit, tmp_path, capsys):
    manual, _, _ = devkit
    args = ["data", "prepare", NAME, "--data-dir", str(tmp_path), "--manual-dir", str(manual)]
    assert cli.main(args) == 0
    assert f"{NAME}: ready" in capsys.readouterr().out
    assert data.get_info(NAME, tmp_path).splits == {"train": 2, "validation": 2}


def test_voc2012_fcn8s_config_is_the_paper_setup():
    config = experiments.load_config("voc2012_fcn8s")
    assert config.data.name == NAME and config.data.image_size == (500, 500)
    assert config.data.batch_size == 1 and config.optimizer.momentum == 0.99
    assert config.model.stages[-1] == (512, 512, 512) and config.model.fc6_kernel == 7
    assert config.optimizer.freeze == ["upscore8/"]
    # 1e-10 on the summed loss over ~500x375 pixels == this rate on the per-pixel mean loss.
    np.testing.assert_allclose(config.optimizer.learning_rate, 1e-10 * 500 * 375)


# The config's data, task, optimizer and freeze paths on 64x64 canvases with a five-conv
# trunk and a narrow 7x7 fc6 (compiling VGG-16's 13 convolutions dominates a smoke run on
# CPU, and its full 4,096-wide fc6 alone has 103M parameters); the full VGG-16 config runs in
# tests/test_experiments.py with JAXCV_SLOW_TESTS=1.
FAST_SMOKE = [
    "data.image_size=(64, 64)",
    "model.stages=((8,), (8,), (16,), (16,), (16,))",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "model.fc_width=64",
    "train.parallel='none'",
    "train.num_steps=2",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
]


def test_voc2012_fcn8s_smoke_trains_on_the_fake_devkit(devkit, tmp_path, monkeypatch):
    from jaxcv.train import runtime
    from jaxcv.train.loop import train_and_evaluate

    monkeypatch.setenv(runtime.CACHE_ENV, "off")
    _, data_dir, _ = devkit
    config = experiments.load_config("voc2012_fcn8s", FAST_SMOKE)
    config.data.data_dir = data_dir
    results = train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["train/steps"] == 2 and np.isfinite(saved["train/loss"])
    for metric in ("mIoU", "pixel_accuracy", "mean_accuracy", "fwIoU"):
        assert 0.0 <= saved[f"validation/{metric}"] <= 1.0
    assert results["validation/mIoU"] == saved["validation/mIoU"]
    assert "figures/" in (tmp_path / "report.md").read_text()
