"""Data parallelism: one train step, three ways to run it, the same result.

``Parallel(mode)`` turns the pure steps of :mod:`jaxcv.train.step` into compiled functions and
moves states and batches to where those functions expect them:

* ``"mesh"`` (default): ``jax.jit`` with shardings over a 1-D ``Mesh(devices, ("data",))``;
  the batch is sharded on its leading axis (``P("data")``), the state is replicated (``P()``).
  The step is written for the global batch; XLA inserts the all-reduces. Batches are
  per-process shards assembled with ``jax.make_array_from_process_local_data``, so the same
  code runs unchanged under ``jax.distributed.initialize`` on several hosts.
* ``"pmap"``: ``jax.pmap(step, axis_name="batch")`` over all devices (``lax.pmean`` spans
  processes); each process holds the state with a leading axis of its ``n_local`` devices and
  reshapes its batch to ``(n_local, B_local / n_local, ...)``. Build the
  step with ``make_train_step(task, axis_name=parallel.axis_name)`` so gradients are averaged
  with ``lax.pmean`` (see :mod:`jaxcv.train.step` for the BatchNorm semantics).
* ``"none"``: plain ``jax.jit`` on one device.

Train steps donate the state (``donate_argnums=(0,)``): do not reuse a state after passing it
to the compiled step. ``put_state`` always copies, so the tree it was given stays valid.

Typical loop::

    parallel = Parallel(config.train.parallel)
    step = parallel.compile_train_step(make_train_step(task, axis_name=parallel.axis_name))
    state = parallel.put_state(state)
    for batch in batches:                        # per-process batches of B_local examples
        state, metrics = step(state, parallel.put_batch(batch))
    host_state = parallel.get_state(state)       # single copy, NumPy leaves
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["MODES", "PMAP_AXIS", "Parallel"]

MODES = ("mesh", "pmap", "none")
PMAP_AXIS = "batch"
MESH_AXIS = "data"


def _host_copy(x: Any) -> np.ndarray:
    """One full copy of a (replicated) leaf as NumPy, also for multi-process arrays."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


class Parallel:
    """Compile steps and place data for one data-parallel mode.

    Args:
      mode: ``"mesh"`` | ``"pmap"`` | ``"none"``.
      devices: devices to use, across all processes. Default: ``jax.devices()`` for ``"mesh"``
        and ``"pmap"``, ``jax.local_devices()[0]`` for ``"none"``. Each process feeds its own
        devices (``local_batch_size_multiple`` of them).

    Attributes:
      mode: the mode.
      devices: the devices used.
      axis_name: ``"batch"`` for pmap (pass it to ``make_train_step``), else None.
      mesh: the ``Mesh`` (mesh mode) or None.
    """

    def __init__(self, mode: str = "mesh", devices: Sequence[jax.Device] | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown parallel mode {mode!r}; valid modes: {list(MODES)}")
        self.mode = mode
        self.axis_name = PMAP_AXIS if mode == "pmap" else None
        self.mesh: Mesh | None = None
        if mode == "none":
            if jax.process_count() > 1:
                raise ValueError(
                    f"parallel mode 'none' runs on one device but {jax.process_count()} "
                    "processes are running; use 'mesh' or 'pmap'"
                )
            self.devices = list(devices) if devices is not None else jax.local_devices()[:1]
            if len(self.devices) != 1:
                raise ValueError(f"parallel mode 'none' takes one device; got {self.devices}")
        elif mode == "pmap":
            self._pmap_devices = list(devices) if devices is not None else None
            self.devices = self._pmap_devices or jax.devices()
        else:
            self.devices = list(devices) if devices is not None else jax.devices()
            self.mesh = Mesh(np.array(self.devices), (MESH_AXIS,))
            self._batch_sharding = NamedSharding(self.mesh, P(MESH_AXIS))
            self._replicated = NamedSharding(self.mesh, P())
        self._local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
        if mode == "pmap":
            local_mesh = Mesh(np.array(self._local_devices), (PMAP_AXIS,))
            self._stacked = NamedSharding(local_mesh, P(PMAP_AXIS))

    def __repr__(self) -> str:
        return f"Parallel(mode={self.mode!r}, devices={len(self.devices)})"

    @property
    def global_batch_size_multiple(self) -> int:
        """The global batch size must be a multiple of this (the number of devices)."""
        return len(self.devices)

    @property
    def local_batch_size_multiple(self) -> int:
        """Each process's batch size must be a multiple of this (its number of devices)."""
        return len(self._local_devices)

    # ----------------------------------------------------------------------------- compile
    def _check_axis(self, step: Callable, kind: str) -> None:
        step_axis = getattr(step, "axis_name", None)
        if kind == "train" and step_axis != self.axis_name:
            raise ValueError(
                f"the {kind} step was built with axis_name={step_axis!r} but parallel mode "
                f"{self.mode!r} needs axis_name={self.axis_name!r}: build it with "
                "make_train_step(task, axis_name=parallel.axis_name)"
            )

    def compile_train_step(self, step: Callable) -> Callable:
        """Compile ``step(state, batch) -> (state, metrics)`` with donation of ``state``.

        The returned function takes a state from :meth:`put_state` and a batch from
        :meth:`put_batch`, and returns the new state (same placement) and scalar metrics.
        It compiles once per batch shape.
        """
        self._check_axis(step, "train")
        if self.mode == "none":
            return jax.jit(step, donate_argnums=(0,))
        if self.mode == "mesh":
            return jax.jit(
                step,
                in_shardings=(self._replicated, self._batch_sharding),
                out_shardings=(self._replicated, self._replicated),
                donate_argnums=(0,),
            )
        pmapped = jax.pmap(
            step, axis_name=PMAP_AXIS, donate_argnums=(0,), devices=self._pmap_devices
        )

        def train_step(state, batch):
            state, metrics = pmapped(state, batch)
            return state, jax.tree.map(lambda m: m[0], metrics)

        return train_step

    def compile_eval_step(self, step: Callable) -> Callable:
        """Compile ``step(state, batch) -> outputs`` (no donation: the state is reused).

        The returned function's outputs have the global batch layout ``(B, ...)`` in every mode
        (in pmap mode the device axis is merged back); use :meth:`get_outputs` to fetch the
        process-local rows as NumPy.
        """
        self._check_axis(step, "eval")
        if self.mode == "none":
            return jax.jit(step)
        if self.mode == "mesh":
            return jax.jit(
                step,
                in_shardings=(self._replicated, self._batch_sharding),
                out_shardings=self._batch_sharding,
            )
        pmapped = jax.pmap(step, axis_name=PMAP_AXIS, devices=self._pmap_devices)

        def eval_step(state, batch):
            outputs = pmapped(state, batch)
            return jax.tree.map(lambda x: x.reshape((-1, *x.shape[2:])), outputs)

        return eval_step

    # ------------------------------------------------------------------------- placement
    def put_batch(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        """Place this process's batch (leading dim ``B_local``) for the compiled steps.

        Raises:
          ValueError: if a value has rank 0, leading dims differ, or ``B_local`` is not
            divisible by the number of local devices (the message names both).
        """
        if not isinstance(batch, dict) or not batch:
            raise ValueError(f"batch must be a non-empty dict of arrays; got {type(batch)}")
        arrays = {k: np.asarray(v) for k, v in batch.items()}
        sizes = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            shapes = {k: v.shape for k, v in arrays.items()}
            raise ValueError(f"batch values must share a leading batch dim; got shapes {shapes}")
        size = next(iter(sizes.values()))
        n = self.local_batch_size_multiple
        if size % n:
            raise ValueError(
                f"batch size {size} is not divisible by the device count {n} "
                f"(parallel mode {self.mode!r}); choose a batch size that is a multiple of {n}"
            )
        if self.mode == "none":
            return jax.device_put(arrays, self.devices[0])
        if self.mode == "mesh":
            return {
                k: jax.make_array_from_process_local_data(self._batch_sharding, v)
                for k, v in arrays.items()
            }
        return {
            k: jax.device_put(v.reshape((n, size // n, *v.shape[1:])), self._stacked)
            for k, v in arrays.items()
        }

    def put_state(self, state: Any) -> Any:
        """Copy a state (single copy, host or device leaves) to the compiled steps' placement.

        ``"none"``: the device; ``"mesh"``: replicated over the mesh; ``"pmap"``: stacked with a
        leading axis of ``n_local`` identical copies. The input tree is left untouched.
        """
        if self.mode == "none":
            return jax.device_put(state, self.devices[0], may_alias=False)
        if self.mode == "mesh":

            def replicate(x):
                if isinstance(x, jax.Array) and not x.is_fully_addressable:
                    return jax.device_put(x, self._replicated, may_alias=False)
                host = np.asarray(x)
                return jax.make_array_from_callback(host.shape, self._replicated, lambda i: host[i])

            return jax.tree.map(replicate, state)
        n = len(self._local_devices)

        def stack(x):
            host = np.asarray(x)
            return jax.device_put(np.broadcast_to(host[None], (n, *host.shape)), self._stacked)

        return jax.tree.map(stack, state)

    def get_state(self, state: Any) -> Any:
        """A single host copy (NumPy leaves) of a state returned by the compiled train step."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: np.asarray(np.asarray(x.addressable_data(0))[0]), state)
        return jax.tree.map(_host_copy, state)

    def get_metrics(self, metrics: dict[str, Any]) -> dict[str, float]:
        """Scalar metrics of the compiled train step as Python floats (blocks until ready)."""
        return {k: float(_host_copy(v)) for k, v in metrics.items()}

    def get_outputs(self, outputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """This process's rows ``(B_local, ...)`` of eval outputs, as NumPy."""

        def local_rows(x):
            if not isinstance(x, jax.Array) or x.is_fully_addressable:
                return np.asarray(x)
            shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
            seen, rows = set(), []
            for shard in shards:
                start = shard.index[0].start or 0
                if start not in seen:
                    seen.add(start)
                    rows.append(np.asarray(shard.data))
            return np.concatenate(rows, axis=0)

        return jax.tree.map(local_rows, outputs)
