"""What `model.init_from` a converted torchvision VGG-16 loads into each VGG-16 config.

torchvision's ``vgg16`` (random weights: the layout, not the values, is what is measured; the
real ``vgg16-397923af.pth`` converts to the same tree) is converted with
``jaxcv.models.convert.convert_state_dict`` and its trunk transferred
(``jaxcv.train.trunk.transfer_trunk``) into the model of each config below, as
``jaxcv train CONFIG --set model.init_from=DIR`` does after ``jaxcv convert torchvision vgg16
vgg16-397923af.pth DIR``. Printed per config: the parameters loaded (VGG-16 has 138.4M, of
which 134.3M are conv1_1 ... fc7), the modules loaded, those left fresh and the source's
modules left out; the last line is one JSON object ``{config: parameters loaded}``. Run::

    .venv/bin/python experiments/bench/trunk_transfer.py      # about a minute, 3 GB
"""

import json
import sys

import jaxcv  # noqa: F401  (sets the CPU convolution flag before jax initialises)

CONFIGS = ("voc07_faster_rcnn_vgg16", "voc07_fast_rcnn_vgg16", "voc07_rcnn_vgg16", "voc2012_fcn8s")
NUM_CLASSES = {"voc2012_fcn8s": 21}


def converted_vgg16() -> dict:
    """torchvision's randomly initialised VGG-16 as jaxcv variables."""
    import torch
    import torchvision

    from jaxcv.models import convert

    torch.manual_seed(0)
    state = {k: v.numpy() for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}
    return convert.convert_state_dict("vgg16", state).variables


def fresh_variables(name: str) -> dict:
    """The config's model variables (zeros: only their shapes matter here)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxcv import experiments
    from jaxcv.models import build_model
    from jaxcv.train.runtime import INIT_KEYS

    config = experiments.load_config(name)
    fields = {k: v for k, v in config.model.to_dict().items() if k not in INIT_KEYS}
    model_name = fields.pop("name")
    fields["num_classes"] = NUM_CLASSES.get(name, 20)
    model = build_model(model_name, **fields)
    images = jnp.zeros((1, 224, 224, 3))
    extra = () if model_name.startswith("fcn") else (jnp.zeros((1, 2, 4)),)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images, *extra))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def main() -> int:
    from jaxcv.train.trunk import transfer_trunk

    source = converted_vgg16()
    loaded = {}
    for name in CONFIGS:
        _, transfer = transfer_trunk(fresh_variables(name), source, target_name=name)
        loaded[name] = transfer.num_loaded
        print(f"== {name}")
        for line in transfer.lines("torchvision vgg16"):
            print("  " + line)
    print(json.dumps(loaded))
    return 0


if __name__ == "__main__":
    sys.exit(main())
