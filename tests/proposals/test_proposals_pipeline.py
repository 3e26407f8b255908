"""External proposals in the tf.data pipeline: joined by split position, moved like boxes."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcv import data
from jaxcv.proposals import raw_examples
from jaxcv.proposals.pipeline import proposal_table
from jaxcv.proposals.table import ProposalTable, pad_proposals, parse_split

KEYS = ("image", "boxes", "classes", "valid", "original_size")
W = 128.0


def test_parse_split():
    assert parse_split("train") == ("train", None)
    assert parse_split("test[:40]") == ("test", 40)
    for bad in ("train[10:]", "train[:10%]", "train+test"):
        with pytest.raises(ValueError, match="prefix slice"):
            parse_split(bad)


def test_pad_proposals_keeps_the_best_ranked_and_masks_padding():
    props = [np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros((0, 4), np.float32)]
    table = pad_proposals(props, 2)
    assert table.boxes.shape == (2, 2, 4) and len(table) == 2 and table.num_proposals == 2
    np.testing.assert_array_equal(table.boxes[0], props[0][:2])
    np.testing.assert_array_equal(table.valid, [[True, True], [False, False]])
    np.testing.assert_array_equal(table.boxes[1], 0)
    with pytest.raises(ValueError, match="num_proposals"):
        pad_proposals(props, 0)
    with pytest.raises(ValueError, match=r"\(I, P\)"):
        ProposalTable(np.zeros((2, 3, 4), np.float32), np.zeros((2, 2), bool))


def _marked_table(data_dir, split, count, num_proposals=8):
    """Row i: a marker box whose y-coordinates encode i, then image i's ground truth."""
    raws = list(raw_examples("shapes/multi", split, data_dir=data_dir, num_images=count))
    rows = []
    for i, ex in enumerate(raws):
        marker = np.array([[0.0, i / 8.0, 1.0, i / 8.0 + 1.0]], np.float32)
        rows.append(np.concatenate([marker, ex["boxes"]]))
    return pad_proposals(rows, num_proposals), raws


def test_proposals_follow_their_image_through_shuffle_and_flip(builtin_data_dir):
    table, raws = _marked_table(builtin_data_dir, "train", 48)
    ds = data.make_pipeline(
        "shapes/multi",
        "train[:48]",
        8,
        train=True,
        augment=True,
        max_objects=8,
        data_dir=builtin_data_dir,
        keys=KEYS,
        proposals=table,
        shuffle_buffer=48,
    )
    seen, flips = [], 0
    for batch in tfds.as_numpy(ds.take(12)):
        assert batch["proposals"].shape == (8, 8, 4) and batch["proposal_valid"].shape == (8, 8)
        for b in range(8):
            props, pvalid = batch["proposals"][b], batch["proposal_valid"][b]
            i = round(float(props[0, 1]) * 8)
            seen.append(i)
            raw = raws[i]
            flipped = props[0, 0] == W - 1.0
            flips += flipped
            gt = raw["boxes"]
            if flipped:
                gt = np.stack([W - gt[:, 2], gt[:, 1], W - gt[:, 0], gt[:, 3]], 1)
            n = len(gt)
            np.testing.assert_array_equal(pvalid, np.arange(8) < 1 + n)
            np.testing.assert_allclose(props[1 : 1 + n], gt, atol=1e-4)
            np.testing.assert_array_equal(props[1 + n :], 0)
            # The ground truth went through the same flip: same boxes, same image.
            np.testing.assert_allclose(batch["boxes"][b][batch["valid"][b]], gt, atol=1e-4)
            image = raw["image"][:, ::-1] if flipped else raw["image"]
            restored = batch["image"][b] * 0.22 + 0.5
            np.testing.assert_allclose(restored * 255.0, image, atol=0.6)
    assert seen[:8] != sorted(seen[:8])  # shuffled
    assert set(seen) == set(range(48))  # two epochs cover the split
    assert 0 < flips < len(seen)


def test_eval_pipeline_resizes_proposals_and_pads_the_last_batch(builtin_data_dir):
    table, _ = _marked_table(builtin_data_dir, "test", 10)
    ds = data.make_pipeline(
        "shapes/multi",
        "test[:10]",
        4,
        train=False,
        image_size=(64, 96),
        data_dir=builtin_data_dir,
        keys=KEYS,
        proposals=table,
    )
    batches = list(tfds.as_numpy(ds))
    assert len(batches) == 3
    props = np.concatenate([b["proposals"] for b in batches])
    valid = np.concatenate([b["proposal_valid"] for b in batches])
    scale = np.array([96 / 128, 64 / 128, 96 / 128, 64 / 128], np.float32)
    np.testing.assert_allclose(props[:10], table.boxes * scale * table.valid[..., None], atol=1e-4)
    np.testing.assert_array_equal(valid[:10], table.valid)
    assert not valid[10:].any()


def test_mismatched_tables_and_sharding_raise(builtin_data_dir):
    table, _ = _marked_table(builtin_data_dir, "test", 10)
    with pytest.raises(ValueError, match="10 rows"):
        data.make_pipeline(
            "shapes/multi",
            "test[:12]",
            4,
            train=False,
            data_dir=builtin_data_dir,
            keys=KEYS,
            proposals=table,
        )
    with pytest.raises(ValueError, match="process_count=1"):
        data.make_pipeline(
            "shapes/multi",
            "test[:10]",
            4,
            train=False,
            data_dir=builtin_data_dir,
            keys=KEYS,
            proposals=table,
            process_index=0,
            process_count=2,
        )


def test_proposal_table_reads_the_config_section(builtin_data_dir, tmp_path):
    import ml_collections

    config = ml_collections.ConfigDict(
        {"data": {"name": "shapes/multi", "data_dir": builtin_data_dir}}
    )
    assert proposal_table(config, "test[:2]", train=False) is None
    config.proposals = {"mode": "fast", "num_train": 5, "num_test": 7, "cache_dir": str(tmp_path)}
    table = proposal_table(config, "test[:2]", train=False)
    assert table.boxes.shape == (2, 7, 4) and table.valid.any(axis=1).all()
    assert list(tmp_path.glob("*.npz"))
