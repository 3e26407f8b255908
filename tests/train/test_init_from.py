"""model.init_from: start a run from converted torchvision weights or from another jaxcv run."""

import textwrap

import numpy as np
import pytest

from jaxcv import cli, experiments
from jaxcv.train import init_from, runtime
from jaxcv.train.loop import train_and_evaluate


@pytest.fixture(autouse=True)
def _no_compilation_cache(monkeypatch):
    monkeypatch.setenv(runtime.CACHE_ENV, "off")


def _flat(tree, prefix=()):
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, (*prefix, k)) if isinstance(v, dict) else {(*prefix, k): v})
    return out


# ---------------------------------------------------------------------------- merging rules
def _vars(out=10, hidden=8, bn=True):
    params = {
        "backbone": {"conv1": {"kernel": np.full((3, 3, 1, 4), 2.0, np.float32)}},
        "fc1": {"kernel": np.ones((16, hidden), np.float32), "bias": np.ones(hidden, np.float32)},
        "logits": {"kernel": np.ones((hidden, out), np.float32), "bias": np.ones(out, np.float32)},
    }
    variables = {"params": params}
    if bn:
        variables["batch_stats"] = {"backbone": {"bn1": {"mean": np.full(4, 3.0, np.float32)}}}
    return variables


def test_merge_takes_source_values_and_reinitialises_a_new_head():
    target = _vars(out=4)
    target["params"]["backbone"]["conv1"]["kernel"] = np.zeros((3, 3, 1, 4), np.float32)
    merged, heads = init_from.merge_variables(target, _vars(out=10), num_classes=4)
    assert heads == ["logits"]
    np.testing.assert_array_equal(merged["params"]["backbone"]["conv1"]["kernel"], 2.0)
    np.testing.assert_array_equal(merged["batch_stats"]["backbone"]["bn1"]["mean"], 3.0)
    assert merged["params"]["logits"]["kernel"].shape == (8, 4)
    assert merged["params"]["logits"]["kernel"] is target["params"]["logits"]["kernel"]


def test_merge_lists_every_other_difference():
    source = _vars(out=10, hidden=8)
    source["params"]["extra"] = {"kernel": np.ones(2, np.float32)}
    del source["batch_stats"]
    with pytest.raises(init_from.InitFromError) as info:
        init_from.merge_variables(_vars(out=10, hidden=6), source, num_classes=10)
    message = str(info.value)
    assert "missing from init_from (1): batch_stats/backbone/bn1/mean" in message
    assert "unexpected in init_from (1): params/extra/kernel" in message
    # fc1 changed its width and logits its input: neither is a new head of 10 outputs.
    assert "params/fc1/kernel: (16, 8) -> (16, 6)" in message
    assert "params/logits/kernel: (8, 10) -> (6, 10)" in message
    # A changed output size that is not num_classes is not taken for a head either.
    with pytest.raises(
        init_from.InitFromError, match=r"params/logits/kernel: \(8, 10\) -> \(8, 4\)"
    ):
        init_from.merge_variables(_vars(out=4), _vars(out=10), num_classes=5)


def test_init_fresh_modules_keep_their_initialisation_and_may_be_absent_from_the_source():
    target = _vars(out=10)
    target["params"]["mask_head"] = {"conv": {"kernel": np.full((3, 3, 4, 4), 7.0, np.float32)}}
    target["batch_stats"]["mask_head"] = {"bn": {"mean": np.full(4, 5.0, np.float32)}}
    target["params"]["fc1"]["kernel"] = np.zeros((16, 8), np.float32)
    source = _vars(out=10)
    source["params"]["fc1"]["kernel"] = np.full((16, 8), 9.0, np.float32)
    # Without init_fresh the absent mask head is an error naming it ...
    with pytest.raises(init_from.InitFromError, match=r"missing from init_from.*mask_head"):
        init_from.merge_variables(target, source, num_classes=10)
    # ... with it, the mask head keeps its values, and fc1 (in the source) too when named.
    merged, kept = init_from.merge_variables(
        target, source, num_classes=10, fresh=["mask_head", "fc1/"]
    )
    assert kept == ["mask_head", "fc1"]
    np.testing.assert_array_equal(merged["params"]["mask_head"]["conv"]["kernel"], 7.0)
    np.testing.assert_array_equal(merged["batch_stats"]["mask_head"]["bn"]["mean"], 5.0)
    np.testing.assert_array_equal(merged["params"]["fc1"]["kernel"], 0.0)
    np.testing.assert_array_equal(merged["params"]["logits"]["kernel"], 1.0)
    np.testing.assert_array_equal(merged["params"]["backbone"]["conv1"]["kernel"], 2.0)
    assert set(_flat(merged)) == set(_flat(target))
    with pytest.raises(init_from.InitFromError, match=r"init_fresh names modules.*'mask_haed'"):
        init_from.merge_variables(target, source, fresh=["mask_haed"])


def test_init_drop_leaves_out_source_modules_the_model_lacks():
    target, source = _vars(out=10), _vars(out=10)
    source["params"]["upscore32"] = {"kernel": np.full((4, 4, 10, 10), 3.0, np.float32)}
    with pytest.raises(init_from.InitFromError, match=r"unexpected in init_from.*upscore32"):
        init_from.merge_variables(target, source, num_classes=10)
    merged, kept = init_from.merge_variables(target, source, num_classes=10, drop=["upscore32"])
    assert kept == [] and set(_flat(merged)) == set(_flat(target))
    np.testing.assert_array_equal(merged["params"]["logits"]["kernel"], 1.0)
    with pytest.raises(init_from.InitFromError, match=r"init_drop names modules.*'upscore16'"):
        init_from.merge_variables(target, source, drop=["upscore16"])


def test_a_classifier_gives_another_model_its_trunk_and_the_log_says_what(tmp_path):
    import dataclasses

    import optax

    from jaxcv.models import convert

    @dataclasses.dataclass(frozen=True)
    class State:
        params: dict
        model_state: dict
        tx: optax.GradientTransformation
        opt_state: object = None

        def replace(self, **changes):
            return dataclasses.replace(self, **changes)

    source = _vars(out=5)
    converted = convert.Converted("cnn", "cnn", {}, source)
    convert.save_converted(converted, tmp_path / "cnn", source="test")
    params = {
        "backbone": {"conv1": {"kernel": np.zeros((3, 3, 1, 4), np.float32)}},
        "box_fc1": {"kernel": np.zeros((16, 3), np.float32)},
    }
    state = State(
        params, {"batch_stats": {"backbone": {"bn1": {"mean": np.zeros(4)}}}}, optax.sgd(1)
    )
    lines = []
    new = init_from.init_state_from(state, tmp_path / "cnn", log=lines.append)
    np.testing.assert_array_equal(new.params["backbone"]["conv1"]["kernel"], 2.0)
    np.testing.assert_array_equal(new.params["box_fc1"]["kernel"], 0.0)
    np.testing.assert_array_equal(new.model_state["batch_stats"]["backbone"]["bn1"]["mean"], 3.0)
    assert new.opt_state is not None
    assert lines[0].startswith("init_from: trunk of torchvision cnn converted in")
    assert "36 parameters in 2 modules" in lines[0]
    assert lines[1:] == [
        "init_from: fresh initialisation kept by box_fc1",
        "init_from: left out of the source: fc1, logits",
    ]


def test_not_a_checkpoint_says_what_was_expected(tmp_path):
    with pytest.raises(init_from.InitFromError, match=r"neither a converted checkpoint.*workdir"):
        init_from.load_variables(tmp_path)


# ------------------------------------------------------------------- CLI: torchvision -> run
TINY_RESNET = '''
    """ResNet-18 (torchvision layout) on shapes/single at 32x32, for the init_from test."""

    import ml_collections


    def get_config():
        c = ml_collections.ConfigDict()
        c.name, c.seed, c.task = "tiny_resnet", 0, "classification"
        c.data = ml_collections.ConfigDict(dict(
            name="shapes/single", data_dir=None, batch_size=8, eval_batch_size=8,
            image_size=(32, 32), augment=False, max_objects=1, train_split="train",
            eval_split="test[:8]"))
        c.model = ml_collections.ConfigDict(dict(name="resnet18", num_classes=None))
        c.optimizer = ml_collections.ConfigDict(dict(
            name="sgd", learning_rate=0.0, momentum=0.9, weight_decay=1e-4,
            schedule="constant", freeze=[]))
        c.train = ml_collections.ConfigDict(dict(
            num_steps=1, log_every=1, eval_every=1, checkpoint_every=1, keep_checkpoints=1,
            best_metric="test[:8]/accuracy", best_mode="max", parallel="none",
            on_nonfinite="stop"))
        return c
'''


def test_cli_convert_then_train_from_the_converted_weights(builtin_data_dir, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tmodel = torchvision.models.resnet18(weights=None)
    torch.save(tmodel.state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "converted"
    assert (
        cli.main(["convert", "torchvision", "resnet18", str(tmp_path / "r18.pth"), str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "resnet18: 11,689,512 parameters -> jaxcv resnet18(" in printed
    assert f"model.init_from={out}" in printed
    converted, _ = init_from.load_variables(out)

    exp = tmp_path / "tiny_resnet.py"
    exp.write_text(textwrap.dedent(TINY_RESNET))
    workdir = tmp_path / "run"
    sets = [f"data.data_dir={builtin_data_dir}", f"model.init_from={out}"]
    argv = ["train", str(exp), "--workdir", str(workdir)]
    assert cli.main(argv + [x for s in sets for x in ("--set", s)]) == 0
    printed = capsys.readouterr().out
    assert "init_from: 11,176,512 parameters from torchvision resnet18 converted in" in printed
    new_head = "fc keeps its fresh initialisation (its output size differs: a new head)"
    assert f"init_from: {new_head}" in printed

    # After one step at learning rate 0 the parameters are the converted ones, except the
    # new 4-class head; the BatchNorm statistics moved (train mode), from the converted ones.
    trained, where = init_from.load_variables(workdir)
    assert "step 1" in where
    params, ref = _flat(trained["params"]), _flat(converted["params"])
    assert params.keys() == ref.keys()
    for path, value in params.items():
        if path[0] == "fc":
            assert value.shape[-1] == 4
        else:
            np.testing.assert_array_equal(value, ref[path], err_msg=str(path))
    mean = trained["batch_stats"]["backbone"]["bn1"]["mean"]
    expected = converted["batch_stats"]["backbone"]["bn1"]["mean"]
    assert 0 < np.abs(mean - expected).max() and np.allclose(mean, expected, atol=1.0)


# ------------------------------------------------------------------- jaxcv run -> jaxcv run
DIGITS_FAST = [
    "data.batch_size=8",
    "data.eval_batch_size=40",
    "data.eval_split=test[:40]",
    "train.best_metric=test[:40]/accuracy",
    "train.log_every=1",
    "train.eval_every=1",
    "train.checkpoint_every=1",
    "train.keep_checkpoints=3",
    "optimizer.warmup_steps=0",
    "optimizer.schedule=constant",
]


def test_init_from_another_run_uses_its_best_checkpoint(builtin_data_dir, tmp_path, capsys):
    def config(overrides):
        c = experiments.load_config("digits_cnn", DIGITS_FAST + overrides)
        c.data.data_dir = builtin_data_dir
        return c

    source = tmp_path / "source"
    train_and_evaluate(config(["train.num_steps=3", "optimizer.learning_rate=0.02"]), source)
    step, why = init_from._pick_step(source / "checkpoints")
    meta = {
        s: __import__("json").loads((source / f"checkpoints/{s}/meta/metadata").read_text())
        for s in (1, 2, 3)
    }
    accs = {s: m["metrics"]["test[:40]/accuracy"] for s, m in meta.items()}
    assert (
        step == max(accs, key=lambda s: (accs[s], s)) and "best step by test[:40]/accuracy" in why
    )
    best, _ = init_from.load_variables(source)

    target = tmp_path / "target"
    frozen = ["optimizer.learning_rate=0.0", "train.num_steps=1", f"model.init_from={source}"]
    train_and_evaluate(config(frozen), target)
    assert f"step {step} (best step" in capsys.readouterr().out
    trained, _ = init_from.load_variables(target)
    for path, value in _flat(trained["params"]).items():
        np.testing.assert_array_equal(value, _flat(best["params"])[path], err_msg=str(path))

    # Another architecture does not fit: one error naming the differing variables.
    with pytest.raises(
        init_from.InitFromError, match=r"params/fc1/kernel: \(256, 128\) -> \(256, 64\)"
    ):
        train_and_evaluate(config([*frozen, "model.hidden_units=(64,)"]), tmp_path / "bad")
