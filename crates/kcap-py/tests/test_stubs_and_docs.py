"""Editors get completion and documentation: the installed package ships
kcap.pyi (as the package's __init__.pyi) and py.typed, the stubs name every
public item of the module, and every public item has a docstring."""

import ast
import inspect
from pathlib import Path

import kcap

STUB = Path(__file__).resolve().parent.parent / "kcap.pyi"


def _stub_names():
    tree = ast.parse(STUB.read_text())
    top, members = set(), {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
        elif isinstance(node, ast.Assign):
            top.update(t.id for t in node.targets if isinstance(t, ast.Name))
        if isinstance(node, ast.ClassDef):
            names = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    names.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    names.add(item.target.id)
            members[node.name] = names
    return top, members


def _public(obj):
    return {n for n in dir(obj) if not n.startswith("_")}


def test_stubs_cover_the_module():
    top, members = _stub_names()
    assert _public(kcap) - {"kcap"} <= top, _public(kcap) - top
    for cls in ("Brain", "Area", "AreaMap"):
        missing = _public(getattr(kcap, cls)) - members[cls] - {"get", "items", "keys", "values"}
        assert not missing, f"{cls}: {missing}"


def test_stub_signatures_parse_and_match_the_ops():
    tree = ast.parse(STUB.read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for name in ("project_rounds", "reciprocal_project", "associate", "merge", "pattern_completion", "overlap", "best_match", "run"):
        stub_args = [a.arg for a in funcs[name].args.args]
        real_args = list(inspect.signature(getattr(kcap, name)).parameters)
        assert stub_args == real_args, name


def test_installed_package_ships_stubs_and_py_typed():
    pkg = Path(kcap.__file__).parent
    assert (pkg / "py.typed").exists()
    assert (pkg / "__init__.pyi").exists() or (pkg / "kcap.pyi").exists()


def test_every_public_item_is_documented():
    for name in _public(kcap) - {"DEVICES", "ENGINES", "kcap"}:
        assert getattr(kcap, name).__doc__, name
    for cls in (kcap.Brain, kcap.Area):
        for name in _public(cls):
            attr = getattr(cls, name)
            if name in {"fix", "unfix", "record_winners", "area_names", "stimulus_names", "name", "unfix_assembly", "winners_array", "get_num_ever_fired"}:
                continue
            assert attr.__doc__, f"{cls.__name__}.{name}"
