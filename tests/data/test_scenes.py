"""Scene rendering of the built-in shapes dataset (NumPy level, no tf)."""

import numpy as np
import pytest

from jaxcv.data.builders.scenes import CLASS_NAMES, SceneSpec, render_scene, tight_box

MULTI = SceneSpec(min_objects=1, max_objects=5)


def _reference_box(mask):
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def test_tight_box_pixel_edge_convention():
    mask = np.zeros((32, 40), np.uint8)
    mask[5:9, 10:20] = 1  # rows 5..8, columns 10..19
    np.testing.assert_array_equal(tight_box(mask), [10, 5, 20, 9])
    single = np.zeros((4, 4), bool)
    single[3, 0] = True
    np.testing.assert_array_equal(tight_box(single), [0, 3, 1, 4])


def test_tight_box_rejects_empty_and_bad_rank():
    with pytest.raises(ValueError, match="empty"):
        tight_box(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\(2, 4, 4\)"):
        tight_box(np.zeros((2, 4, 4)))


def test_render_is_deterministic_and_seed_dependent():
    a = render_scene(np.random.default_rng((0, 1, 7)), MULTI)
    b = render_scene(np.random.default_rng((0, 1, 7)), MULTI)
    c = render_scene(np.random.default_rng((0, 1, 8)), MULTI)
    for field in ("image", "boxes", "labels", "masks", "segmentation"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", range(40))
def test_scene_invariants(seed):
    scene = render_scene(np.random.default_rng((3, 0, seed)), MULTI)
    s = MULTI.image_size
    n = scene.labels.shape[0]
    assert 1 <= n <= MULTI.max_objects
    assert scene.image.shape == (s, s, 3) and scene.image.dtype == np.uint8
    assert scene.masks.shape == (n, s, s) and scene.masks.dtype == np.uint8
    assert scene.boxes.shape == (n, 4) and scene.boxes.dtype == np.float32
    assert set(np.unique(scene.masks)) <= {0, 1}
    assert np.all((scene.labels >= 0) & (scene.labels < len(CLASS_NAMES)))
    # Visible masks are disjoint and large enough.
    assert scene.masks.sum(axis=0).max() <= 1
    assert np.all(scene.masks.sum(axis=(1, 2)) >= MULTI.min_visible_pixels)
    # Boxes are the tight boxes of the visible masks.
    for box, mask in zip(scene.boxes, scene.masks, strict=True):
        np.testing.assert_array_equal(box, _reference_box(mask))
    # The semantic map is exactly the union of the instance masks with class ids 1..K.
    expected = (scene.masks * (scene.labels[:, None, None] + 1)).sum(axis=0)
    np.testing.assert_array_equal(scene.segmentation, expected)


def test_occlusion_happens_and_hidden_objects_are_dropped():
    spec = SceneSpec(min_objects=5, max_objects=5, min_size=0.15, max_size=0.2)
    scenes = [render_scene(np.random.default_rng((4, 0, i)), spec) for i in range(30)]
    fractions = np.concatenate([sc.visible_fraction for sc in scenes])
    assert np.all(fractions >= spec.min_visible_fraction)
    assert np.all(fractions <= 1.0)
    assert np.mean(fractions < 0.9) > 0.1  # many objects are partly hidden
    assert min(len(sc.labels) for sc in scenes) < 5  # nearly hidden objects were dropped
    for sc in scenes:  # the top-most (last) object is never occluded
        assert sc.visible_fraction[-1] == 1.0


def test_single_object_scenes():
    spec = SceneSpec(min_objects=1, max_objects=1, min_size=0.1, max_size=0.3)
    labels = [render_scene(np.random.default_rng((5, 0, i)), spec).labels for i in range(60)]
    assert all(len(lab) == 1 for lab in labels)
    assert set(np.concatenate(labels)) == set(range(len(CLASS_NAMES)))


def test_colour_does_not_give_away_the_class():
    """Mean object colour per class is nearly the same (colours are drawn class-independently)."""
    spec = SceneSpec(min_objects=1, max_objects=1, min_size=0.1, max_size=0.3)
    colours = {k: [] for k in range(len(CLASS_NAMES))}
    for i in range(200):
        scene = render_scene(np.random.default_rng((6, 0, i)), spec)
        colours[int(scene.labels[0])].append(scene.image[scene.masks[0] > 0].mean(axis=0))
    means = np.stack([np.mean(v, axis=0) for v in colours.values()])
    assert np.ptp(means, axis=0).max() < 40.0  # of 255; per-class colour std is about 70
