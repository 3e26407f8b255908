"""Whole-dataset proposals: computed once, cached on disk, reused; recall and MABO."""

import os

import numpy as np
import pytest

from jaxcv.proposals import (
    best_overlaps,
    cache,
    compute_proposals,
    dataset_proposals,
    default_cache_dir,
    default_cache_path,
    mean_best_overlap,
    proposal_recall,
    raw_examples,
    selective_search,
)


def _images(n=3, size=24):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = np.full((size, size, 3), 60 + 40 * i, np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        image[y : y + 8, x : x + 9] = (250, 20, 20)
        out.append(image)
    return out


def _refuse(*args, **kwargs):
    raise AssertionError("selective_search must not run when the cache is valid")


def _refusing_images():
    raise AssertionError("images must not be read when the cache is valid")
    yield


def test_second_call_reuses_the_cache(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "props.npz"
    images = _images()
    first = compute_proposals(images, path, mode="fast", max_proposals=10, num_images=3)
    assert path.exists() and len(first) == 3
    for image, boxes in zip(images, first, strict=True):
        np.testing.assert_array_equal(boxes, selective_search(image, "fast", max_proposals=10))
    monkeypatch.setattr(cache, "selective_search", _refuse)
    second = compute_proposals(_refusing_images(), path, mode="fast", max_proposals=10)
    assert len(second) == 3
    for a, b in zip(first, second, strict=True):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob("sub/.proposals-*"))  # no temporary files left


def test_changed_settings_or_count_recompute(tmp_path):
    path = tmp_path / "props.npz"
    images = _images()
    compute_proposals(images, path, mode="fast", max_proposals=2)
    with pytest.warns(UserWarning, match="recomputing"):
        reseeded = compute_proposals(images, path, mode="fast", max_proposals=20, seed=3)
    for image, boxes in zip(images, reseeded, strict=True):
        np.testing.assert_array_equal(boxes, selective_search(image, max_proposals=20, seed=3))
    with pytest.warns(UserWarning, match="recomputing"):
        fewer = compute_proposals(images[:2], path, max_proposals=20, seed=3, num_images=2)
    assert len(fewer) == 2


def test_corrupt_cache_is_replaced(tmp_path):
    path = tmp_path / "props.npz"
    path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable"):
        out = compute_proposals(_images(1), path, max_proposals=4)
    assert len(out) == 1
    again = compute_proposals(_refusing_images(), path, max_proposals=4)
    np.testing.assert_array_equal(again[0], out[0])


def test_wrong_image_count_and_no_cache(tmp_path):
    with pytest.raises(ValueError, match="expected 5 images, got 3"):
        compute_proposals(_images(), tmp_path / "p.npz", num_images=5)
    assert not (tmp_path / "p.npz").exists()
    assert len(compute_proposals(_images(2), None, max_proposals=3)) == 2


def test_accepts_example_dicts():
    images = _images(2)
    from_dicts = compute_proposals(({"image": im} for im in images), None, max_proposals=3)
    for image, boxes in zip(images, from_dicts, strict=True):
        np.testing.assert_array_equal(boxes, selective_search(image, max_proposals=3))


def test_default_cache_path_is_keyed(tmp_path):
    path = default_cache_path("shapes/multi", "test", "fast", 50, None, cache_dir=tmp_path)
    assert path == str(tmp_path / "shapes_multi-test-fast-n50-maxall.npz")
    other = default_cache_path("shapes/multi", "test", "quality", 50, 100, cache_dir=tmp_path)
    assert other != path


def test_default_cache_dir_is_in_the_data_dir(tmp_path, monkeypatch):
    """One rule: ``data_dir``, else ``$JAXCV_DATA_DIR``, else ``~/tensorflow_datasets``."""
    given, env = tmp_path / "given", tmp_path / "env"
    monkeypatch.setenv("JAXCV_DATA_DIR", str(env))
    assert default_cache_dir(given) == str(given / "jaxcv_proposals")
    assert default_cache_dir() == str(env / "jaxcv_proposals")
    path = default_cache_path("digits", "test", "fast", 5, None, data_dir=given)
    assert path == str(given / "jaxcv_proposals" / "digits-test-fast-n5-maxall.npz")
    monkeypatch.delenv("JAXCV_DATA_DIR")
    home = os.path.expanduser("~/tensorflow_datasets")
    assert default_cache_dir() == os.path.join(home, "jaxcv_proposals")


def _np_iou(a, b):
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def _random_boxes(rng, n):
    xy = rng.uniform(0, 80, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, 40, (n, 2))], axis=1).astype(np.float32)


def test_best_overlaps_match_numpy_reference():
    rng = np.random.default_rng(1)
    props = [_random_boxes(rng, n) for n in (300, 7, 0)]
    gts = [_random_boxes(rng, m) for m in (3, 9, 2)]
    got = best_overlaps(props, gts)
    for p, g, o in zip(props, gts, got, strict=True):
        want = _np_iou(g, p).max(axis=1) if len(p) else np.zeros(len(g))
        np.testing.assert_allclose(o, want, atol=1e-6)
    flat = np.concatenate([_np_iou(g, p).max(1) for p, g in zip(props[:2], gts[:2], strict=True)])
    flat = np.concatenate([flat, [0.0, 0.0]])
    assert proposal_recall(props, gts, 0.5) == pytest.approx(np.mean(flat >= 0.5))
    assert mean_best_overlap(props, gts) == pytest.approx(flat.mean(), abs=1e-6)


def test_recall_and_mabo_hand_values():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 4, 4]])]
    props = [np.array([[0, 0, 10, 5], [20, 20, 30, 30]]), np.zeros((0, 4))]
    # best overlaps: 0.5 (half the box), 1.0, 0.0 (no proposals)
    assert proposal_recall(props, gt, 0.5) == pytest.approx(2 / 3)
    assert proposal_recall(props, gt, 0.6) == pytest.approx(1 / 3)
    assert mean_best_overlap(props, gt) == pytest.approx(0.5)
    # classes: class 1 -> {0.5, 0.0}, class 2 -> {1.0}: MABO = (0.25 + 1.0) / 2
    assert mean_best_overlap(props, gt, [np.array([1, 2]), np.array([1])]) == pytest.approx(0.625)


@pytest.mark.parametrize(
    ("props", "gts", "match"),
    [
        ([np.zeros((1, 4))], [], "1 images but ground truth for 0"),
        ([np.zeros((1, 3))], [np.zeros((1, 4))], r"proposals\[0\] must be \(N, 4\)"),
        ([np.zeros((1, 4))], [np.zeros((0, 4))], "without ground-truth"),
    ],
)
def test_recall_rejects_bad_inputs(props, gts, match):
    with pytest.raises(ValueError, match=match):
        proposal_recall(props, gts)
    with pytest.raises(ValueError, match="iou_threshold"):
        proposal_recall([np.zeros((1, 4))], [np.ones((1, 4))], 1.5)


def test_dataset_proposals_on_builtin_shapes(builtin_data_dir, tmp_path, monkeypatch):
    examples = list(raw_examples("shapes/multi", "test", data_dir=builtin_data_dir, num_images=3))
    assert len(examples) == 3
    for ex in examples:
        assert ex["image"].dtype == np.uint8 and ex["image"].shape == (128, 128, 3)
        assert ex["boxes"].shape[1] == 4 and ex["classes"].min() >= 1
    kwargs = dict(mode="fast", max_proposals=50, num_images=3, data_dir=builtin_data_dir)
    props = dataset_proposals("shapes/multi", "test", cache_dir=tmp_path, **kwargs)
    for ex, boxes in zip(examples, props, strict=True):
        np.testing.assert_array_equal(boxes, selective_search(ex["image"], max_proposals=50))
    assert (tmp_path / "shapes_multi-test-fast-n3-max50.npz").exists()
    monkeypatch.setattr(cache, "selective_search", _refuse)
    again = dataset_proposals("shapes/multi", "test", cache_dir=tmp_path, **kwargs)
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(props))
    with pytest.raises(ValueError, match="no split 'val'"):
        dataset_proposals("shapes/multi", "val", cache_dir=tmp_path, **kwargs)
