"""The repository folder kernels/ is installed as fastnn.kernels, never as top-level kernels."""
import importlib
import pkgutil
import subprocess
import sys

import fastnn
import fastnn.kernels


def test_top_level_kernels_is_not_ours(tmp_path):
    # Run from a neutral directory so the repository root is not on sys.path.
    code = ("import importlib.util, json; s = importlib.util.find_spec('kernels'); "
            "print(json.dumps(None if s is None else [s.origin, list(s.submodule_search_locations or [])]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.strip()
    ours = str(fastnn.kernels.__path__[0])
    assert ours not in out, f"'import kernels' resolves to fastnn's kernels: {out}"


def test_every_kernel_module_imports():
    names = [m.name for m in pkgutil.walk_packages(fastnn.kernels.__path__, "fastnn.kernels.")]
    assert {"fastnn.kernels.activations", "fastnn.kernels.matmul", "fastnn.kernels.bias",
            "fastnn.kernels.losses", "fastnn.kernels.optim"} <= set(names)
    for name in names:
        importlib.import_module(name)


def test_public_api_is_listed():
    for name in fastnn.__all__:
        assert hasattr(fastnn, name), name


def test_ci_runs_the_readme_test_command():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text().splitlines()
    start = readme.index("```bash")
    train_cmd, test_cmd = readme[start + 1], readme[start + 2]
    assert "fastnn train" in train_cmd and "pytest" in test_cmd
    assert test_cmd in (root / ".ci" / "run").read_text()


def test_every_package_folder_is_listed_in_pyproject():
    """setuptools installs only the packages listed explicitly: a new subpackage missing
    from ``[tool.setuptools] packages`` would be absent from the wheel (the editable
    install used for development hides that)."""
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"fastnn": root / "fastnn", **{name: root / path for name, path
                                            in config["package-dir"].items()}}
    found = set()
    for package, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            if "__pycache__" not in parts and not any(p.endswith(".egg-info") for p in parts):
                found.add(".".join((package, *parts)))
    assert found == set(config["packages"])
