"""SmallClassifier: the detectors' small trunk as a classifier, and its trunk in a detector."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcv.models import build_model
from jaxcv.train.trunk import transfer_trunk

TRUNK = {"widths": (4, 8, 8, 12), "depth": 2}


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_logits_are_the_linear_layer_of_the_pooled_c4(norm):
    model = build_model("small_classifier", num_classes=3, norm=norm, **TRUNK)
    images = jax.random.normal(jax.random.key(0), (2, 32, 48, 3))
    variables = model.init(jax.random.key(1), images)
    assert set(variables["params"]) == {"backbone", "fc"}
    logits = model.apply(variables, images)
    c4 = model.apply(variables, images, method="features")["c4"]
    assert c4.shape == (2, 2, 3, 12)
    fc = variables["params"]["fc"]
    expected = np.asarray(c4, np.float64).mean(axis=(1, 2)) @ fc["kernel"] + fc["bias"]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    if norm == "batch":
        _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
        assert set(updates) == {"batch_stats"}


def test_its_trunk_gives_a_faster_rcnn_the_same_features():
    classifier = build_model("small_classifier", num_classes=4, **TRUNK)
    images = jax.random.normal(jax.random.key(2), (1, 64, 64, 3))
    source = classifier.init(jax.random.key(3), images)
    detector = build_model(
        "faster_rcnn",
        num_classes=2,
        backbone_widths=TRUNK["widths"],
        backbone_depth=TRUNK["depth"],
        representation_size=8,
    )
    target = detector.init(jax.random.key(4), images, jnp.zeros((1, 2, 4)))
    variables, transfer = transfer_trunk(target, source)
    assert transfer.unused == ["fc"] and not any(m.startswith("backbone") for m in transfer.fresh)
    want = classifier.apply(source, images, method="features")["c4"]
    got = detector.apply(variables, images, method="rpn")[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
