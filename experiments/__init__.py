"""The experiment configs of jaxcv: one module per experiment, each with a ``get_config()``
and a docstring giving the command, the hardware and the expected result.

Installed as the package ``jaxcv_experiments`` (see ``package-dir`` in pyproject.toml), so
``jaxcv train NAME`` and ``jaxcv list`` work from a wheel; :mod:`jaxcv.experiments` finds
and loads them. Shared config sections and family bases are in ``bases.py``; ``bench/`` holds
the benchmark scripts (not installed).
"""
