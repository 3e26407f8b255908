"""jaxcv's models, tasks, ops and train step run without TensorFlow, tensorflow-datasets and
ml-collections (an accelerator machine may have none of them; only the input pipeline, the
dataset builders and the experiment configs need them).

A subprocess makes the three unimportable (``sys.modules`` entries of None, set before jaxcv
is imported), builds models from the registry and the tasks from their recipes, with the
configs of ``digits_cnn`` and a shrunk ``shapes_faster_rcnn`` handed over as plain dicts (JSON,
loaded here where ml-collections exists), then runs one jitted train step and one eval step of
each on synthetic batches.
"""

import json
import subprocess
import sys

import numpy as np

from jaxcv import experiments

BLOCKED = ("tensorflow", "tensorflow_datasets", "ml_collections")
# Run first in the subprocess: a None entry in sys.modules is what Python reads as "not
# installed" (``import`` raises ModuleNotFoundError, ``importlib.util.find_spec`` returns None,
# as torch's probes expect).
BLOCKER = f"""
import sys
sys.modules.update(dict.fromkeys({BLOCKED!r}))
"""
CHILD = """
import json
import jax, numpy as np
import jaxcv, jaxcv.ops, jaxcv.tasks
from jaxcv.models import MODELS, build_model
from jaxcv.recipes import recipe_for
from jaxcv.train import create_train_state, make_eval_step, make_optimizer, make_train_step

cases, out = json.loads(sys.stdin.read()), {}
for name, case in cases.items():
    config, classes = case["config"], case["classes"]
    recipe = recipe_for(config["task"])
    fields = {k: v for k, v in config["model"].items() if not k.startswith("init_")}
    model_name = fields.pop("name")
    fields["num_classes"] = classes + recipe.counts_background
    assert model_name in MODELS
    task = recipe.build(config, build_model(model_name, **fields))
    batch = {k: np.asarray(v, dtype=case["dtypes"][k]) for k, v in case["batch"].items()}
    tx = make_optimizer(config["optimizer"], config["train"]["num_steps"])
    state = create_train_state(task, jax.random.PRNGKey(0), batch, tx)
    state, metrics = jax.jit(make_train_step(task), donate_argnums=0)(state, batch)
    outputs = jax.jit(make_eval_step(task))(state, batch)
    out[name] = {
        "loss": float(metrics["loss"]),
        "step": int(state.step),
        "outputs": sorted(outputs),
    }
try:  # the check of the check: the input pipeline does need TensorFlow
    import jaxcv.data
except ModuleNotFoundError as error:
    out["data_needs"] = error.name
loaded = [m for m, mod in sys.modules.items() if mod is not None and m.partition(".")[0] in %r]
out["blocked_loaded"] = loaded
print(json.dumps(out))
"""

# shapes_faster_rcnn shrunk as tests/train/test_compile_once.py shrinks it.
TINY_DETECTOR = [
    "data.image_size=(64, 64)",
    "data.max_objects=4",
    "model.backbone_widths=(8, 8, 16, 16)",
    "model.backbone_depth=1",
    "model.anchor_sizes=(16.0, 32.0)",
    "model.representation_size=32",
    "detection.rpn_batch_size_per_image=32",
    "detection.rpn_pre_nms_top_n_train=48",
    "detection.rpn_post_nms_top_n_train=24",
    "detection.rpn_pre_nms_top_n_test=48",
    "detection.rpn_post_nms_top_n_test=24",
    "detection.roi_batch_size_per_image=16",
    "detection.detections_per_image=10",
]


def _detection_batch(n: int, size: int, max_objects: int, classes: int) -> dict:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, size / 2, (n, max_objects, 2))
    wh = rng.uniform(8, size / 2, (n, max_objects, 2))
    valid = np.arange(max_objects) < np.array([[1], [3]])[:n]
    return {
        "image": rng.normal(size=(n, size, size, 3)),
        "boxes": np.where(valid[..., None], np.concatenate([xy, xy + wh], -1), 0.0),
        "classes": np.where(valid, rng.integers(1, classes + 1, valid.shape), 0),
        "valid": valid,
        "original_size": np.full((n, 2), size),
        "example_valid": np.ones(n, bool),
    }


def _case(name: str, overrides: list[str], batch: dict, classes: int) -> dict:
    config = experiments.load_config(name, overrides).to_dict()
    dtypes = {k: str(np.asarray(v).dtype) for k, v in batch.items()}
    for key in ("image", "boxes"):
        dtypes[key] = "float32"
    for key in ("label", "classes", "original_size"):
        dtypes[key] = "int32"
    lists = {k: np.asarray(v).tolist() for k, v in batch.items()}
    return {"config": config, "classes": classes, "batch": lists, "dtypes": dtypes}


def _to_json(value):
    return list(value) if isinstance(value, tuple) else value


def test_models_tasks_and_train_step_need_no_tensorflow_nor_ml_collections():
    rng = np.random.default_rng(0)
    classifier = {"image": rng.normal(size=(4, 8, 8, 1)), "label": np.arange(4) % 10}
    cases = {
        "digits_cnn": _case("digits_cnn", [], classifier, 10),
        "shapes_faster_rcnn": _case(
            "shapes_faster_rcnn", TINY_DETECTOR, _detection_batch(2, 64, 4, 4), 4
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER + "import sys\n" + CHILD % (BLOCKED,)],
        input=json.dumps(cases, default=_to_json),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("blocked_loaded") == []
    assert out.pop("data_needs") == "tensorflow"
    for name, result in out.items():
        assert np.isfinite(result["loss"]), name
        assert result["step"] == 1, name
    assert "logits" in out["digits_cnn"]["outputs"]
    assert {"pred_boxes", "pred_scores", "pred_valid"} <= set(out["shapes_faster_rcnn"]["outputs"])
