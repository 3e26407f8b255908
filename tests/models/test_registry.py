"""MODELS / build_model: names, fields, dtypes, and the classifier apply contract."""

import chex
import jax
import jax.numpy as jnp
import pytest

from jaxcv.models import MODELS, build_model, model_fields


def test_models_registry_names():
    classifiers = {"cnn", "vgg", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn"}
    classifiers |= {"resnet18", "resnet34", "resnet50", "small_classifier"}
    others = {"autoencoder", "encoder_classifier", "vae", "fcn", "fcn32s", "fcn16s", "fcn8s"}
    others.add("fcn_resnet50")
    others |= {"resnet_fpn", "faster_rcnn_fpn", "mask_rcnn_fpn"}
    others |= {
        "deconvnet",
        "patch_cnn",
        "localizer",
        "faster_rcnn",
        "mask_rcnn",
        "rcnn",
        "fast_rcnn",
    }
    assert set(MODELS) == classifiers | others
    for name in classifiers:
        fields = model_fields(name)
        assert {"num_classes", "dtype", "param_dtype"} <= set(fields)
        assert "parent" not in fields and "name" not in fields


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'.*resnet18.*vgg16_bn"):
        build_model("resnet19")


def test_unknown_field_lists_valid_fields():
    with pytest.raises(ValueError, match=r"\['depth'\].*'resnet18'.*num_classes.*stem"):
        build_model("resnet18", depth=18)


def test_dtype_strings_and_lists_are_canonicalised():
    model = build_model("cnn", dtype="bfloat16", channels=[4, 8], hidden_units=[16])
    assert model.dtype == jnp.bfloat16
    assert model.channels == (4, 8)
    assert model.hidden_units == (16,)
    hash(model)  # usable as a static argument
    vgg = build_model("vgg11", stages=[[8], [8], [8], [8], [8]], pool_output=[1, 1])
    assert vgg.stages == ((8,),) * 5 and vgg.pool_output == (1, 1)
    with pytest.raises(ValueError, match="floating"):
        build_model("resnet18", dtype="int8")


def test_build_model_accepts_a_config_style_dict():
    config = {"name": "resnet18", "num_classes": 4, "stem": "cifar", "width": 4}
    model = build_model(**config)
    assert model.num_classes == 4 and model.stem == "cifar"


def test_classifier_apply_contract():
    """apply(variables, images, train=..., rngs={'dropout'}, mutable=['batch_stats'])."""
    model = build_model("cnn", num_classes=3, channels=(4, 8), hidden_units=(8,), batch_norm=True)
    images = jnp.ones((2, 16, 16, 3))
    variables = jax.jit(model.init)(jax.random.key(0), images)
    assert set(variables) == {"params", "batch_stats"}
    logits, updates = model.apply(
        variables, images, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"]
    )
    chex.assert_shape(logits, (2, 3))
    assert set(updates) == {"batch_stats"}
    chex.assert_shape(model.apply(variables, images, train=False), (2, 3))
