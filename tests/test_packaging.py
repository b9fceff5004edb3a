"""The project's own files agree with each other."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs |= {r for r in extra if not r.startswith("deepinfo-discarding[")}
    return reqs


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) - {"-e ."} == pyproject_requirements()
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python == "python" + requires


def test_estimator_core_needs_torch_alone():
    # `pip install deepinfo-discarding` without extras must be enough for the estimators and the
    # command: torch, plus pillow and matplotlib for the command's images and figures.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {r.split(">")[0].split("<")[0].split("=")[0] for r in project["dependencies"]}
    assert core == {"torch", "numpy", "tqdm", "pillow", "matplotlib"}
    assert project["name"] != "deepinfo"  # taken on PyPI by an unrelated project
    assert project["scripts"]["deepinfo"] == "deepinfo.cli:main"
    for module in ["estimators", "_engine", "_features", "_grid", "_images", "_jacobian", "_solver", "result",
                   "decoder", "cli", "models/normalize", "models/layer_names"]:
        src = (ROOT / "deepinfo" / f"{module}.py").read_text()
        for heavy in ("torchvision", "captum", "zennit", "matplotlib", "seaborn", "pandas"):
            # the command imports matplotlib and torchvision inside the functions that need them
            top = "\n".join(line for line in src.splitlines() if not line.startswith(" "))
            assert f"import {heavy}" not in top and f"from {heavy}" not in top, (module, heavy)
