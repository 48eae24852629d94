"""Meta-tests: the wheel lists every package, the public API is what it says."""

from __future__ import annotations

import pathlib
import tomllib

import triograph.core

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIRS = {"core": "triograph.core", "plugins": "triograph.plugins", "storage": "triograph.storage"}


def test_every_package_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for directory, package in DIRS.items():
        for init in (ROOT / directory).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / directory)
            found.add(".".join([package, *rel.parts]))
    assert found == set(config["packages"])
    for package in found:
        assert package in config["package-dir"]


def test_py_typed_markers() -> None:
    for directory in DIRS:
        assert (ROOT / directory / "py.typed").exists()


def test_public_api_matches_all() -> None:
    public = {name for name in vars(triograph.core) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(triograph.core, name)).__name__ == "module"}
    assert set(triograph.core.__all__) == public - modules
    for name in triograph.core.__all__:
        assert getattr(triograph.core, name) is not None


def test_no_triograph_init_namespace_package() -> None:
    assert not (ROOT / "triograph" / "__init__.py").exists()
