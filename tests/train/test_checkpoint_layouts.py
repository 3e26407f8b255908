"""Checkpoints move between device layouts and processes.

This process (8 forced CPU devices) trains 3 steps on the 8-device mesh and saves the sharded
state. A subprocess with ONE device restores it, must see exactly the saved values, trains 3 more
steps on its single device and saves. That checkpoint is restored here onto the 8-device mesh
(every leaf replicated over the 8 devices) and equals the subprocess's state exactly and the
same 6 steps trained on the mesh within float32 reduction-order noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import flax.serialization
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcv.train import (
    Checkpointer,
    Parallel,
    create_train_state,
    fingerprint,
    make_optimizer,
    make_train_step,
)

from . import SGD, TinyTask, make_batches

META = {"name": "layouts", "config_hash": fingerprint({"task": "tiny-bn"})}

BATCHES = make_batches(6, batch_size=16, seed=3)


def template(seed: int = 1):
    """A fresh TinyTask (input BatchNorm) state, SGD with momentum."""
    tx = make_optimizer(SGD, 10)
    return create_train_state(TinyTask(input_bn=True), jax.random.PRNGKey(seed), BATCHES[0], tx)


def flat(state) -> dict[str, np.ndarray]:
    """``{key path: host array}`` of every leaf of a state."""
    leaves = jax.tree_util.tree_flatten_with_path(flax.serialization.to_state_dict(state))[0]
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def train(parallel: Parallel, state, batches):
    """``state`` trained on ``batches`` with ``parallel``; returns the placed state."""
    step = parallel.compile_train_step(make_train_step(TinyTask(input_bn=True)))
    state = parallel.put_state(state)
    for batch in batches:
        state, _ = step(state, parallel.put_batch(batch))
    return state


_WORKER = """
import sys
ckpt_in, ckpt_out, out, tests_dir, meta = sys.argv[1:6]
sys.path.insert(0, tests_dir)
import json
import jax
import numpy as np
from jaxcv.train import Checkpointer, Parallel
from train.test_checkpoint_layouts import BATCHES, flat, template, train
assert jax.device_count() == 1, jax.devices()
with Checkpointer(ckpt_in, metadata=json.loads(meta)) as ckpt:
    state = ckpt.restore(ckpt.latest_step(), template(seed=7))
restored = flat(state)
state = train(Parallel("none"), state, BATCHES[3:])
assert len(jax.tree.leaves(state)[0].sharding.device_set) == 1
with Checkpointer(ckpt_out, metadata=json.loads(meta), async_save=False) as ckpt:
    ckpt.save(6, state)  # the single-device arrays themselves
np.savez(out, **{"restored" + k: v for k, v in restored.items()},
         **{"final" + k: v for k, v in flat(state).items()})
"""


def test_mesh_to_single_device_process_and_back(tmp_path):
    assert jax.device_count() == 8, "tests/conftest.py forces 8 CPU devices"
    mesh = Parallel("mesh")
    on_mesh = train(mesh, template(), BATCHES[:3])
    replicated = NamedSharding(mesh.mesh, P())
    assert all(leaf.sharding == replicated for leaf in jax.tree.leaves(on_mesh))
    with Checkpointer(tmp_path / "from_mesh", metadata=META, async_save=False) as ckpt:
        ckpt.save(3, on_mesh)  # the mesh-replicated arrays themselves
    at_3 = flat(mesh.get_state(on_mesh))
    at_6 = flat(mesh.get_state(train(mesh, mesh.get_state(on_mesh), BATCHES[3:])))

    flags = os.environ.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", "--xla_force_host_platform_device_count=1"
    )
    tests_dir = str(Path(__file__).resolve().parents[1])
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    out = tmp_path / "worker.npz"
    args = [tmp_path / "from_mesh", tmp_path / "from_one", out, tests_dir, json.dumps(META)]
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        env=dict(os.environ, XLA_FLAGS=flags),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    worker = np.load(out)

    # 8 devices -> 1: the single-device process sees exactly what the mesh saved
    assert at_3.keys() and all("restored" + k in worker for k in at_3)
    for k, v in at_3.items():
        np.testing.assert_array_equal(worker["restored" + k], v, err_msg=k)

    # 1 device -> 8: restored replicated over the mesh, exactly the saved values
    target = mesh.put_state(template(seed=5))
    with Checkpointer(tmp_path / "from_one", metadata=META) as ckpt:
        assert ckpt.all_steps() == [6]
        back = ckpt.restore(6, target)
    for leaf in jax.tree.leaves(back):
        assert leaf.sharding == replicated and len(leaf.sharding.device_set) == 8
    got = flat(back)
    assert got.keys() == at_6.keys()
    for k, v in got.items():
        np.testing.assert_array_equal(v, worker["final" + k], err_msg=k)
        # the 1-device continuation equals the mesh continuation (float32 sums reordered)
        np.testing.assert_allclose(v, at_6[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert int(got["['step']"]) == 6
    assert not np.allclose(
        got["['params']['Conv_0']['kernel']"], at_3["['params']['Conv_0']['kernel']"]
    )
