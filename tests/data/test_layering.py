"""jaxcv.data sits below jaxcv.proposals: the proposals package reads datasets through
jaxcv.data (jaxcv/proposals/cache.py), so jaxcv.data must not import it back (not even inside
a function), or the two packages form an import cycle."""

import ast
import pathlib

import jaxcv

DATA = pathlib.Path(jaxcv.__file__).parent / "data"


def _imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_data_imports_nothing_of_proposals():
    offenders = {
        str(path.relative_to(DATA.parent)): sorted(
            name for name in _imported_modules(path) if name.startswith("jaxcv.proposals")
        )
        for path in DATA.rglob("*.py")
    }
    assert not {path: names for path, names in offenders.items() if names}
    assert (DATA / "proposals.py").exists()  # the tf.data join lives on this side


def test_proposal_tables_need_no_tensorflow():
    names = _imported_modules(DATA.parent / "proposals" / "table.py")
    assert not {n for n in names if n.startswith(("tensorflow", "jaxcv.data"))}
