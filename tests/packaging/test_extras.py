"""Issue 16 §4: `moire` runs without torch; `alter` without its extra says which extra in one line."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A meta-path finder that makes the `alter` extra's heavy packages unimportable (as if not installed).
BLOCKER = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = {"torch", "transformers", "accelerate", "peft", "safetensors", "gguf", "rouge_score"}
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None
    sys.meta_path.insert(0, Blocker())
    for m in list(sys.modules):
        if m.split(".")[0] in BLOCKED:
            del sys.modules[m]
""")


def run_blocked(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_every_moire_module_imports_without_torch():
    res = run_blocked("""
        import importlib, pkgutil, sys
        import moire_cli
        names = [m.name for m in pkgutil.walk_packages(moire_cli.__path__, "moire_cli.")]
        for name in names:
            importlib.import_module(name)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not heavy, heavy
        print(len(names), "modules")
    """)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[0]) >= 10


def test_moire_phonons_runs_without_torch(tmp_path):
    out = tmp_path / "ph"
    res = run_blocked("""
        import sys
        from moire_cli.cli import main
        sys.argv = ["moire", *sys.argv[1:]]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
    """, "phonons", "configs/moire/mose2_wse2_triangular.yaml", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "bands.csv").is_file()


def test_blocker_really_blocks_torch():
    res = run_blocked("import torch")
    assert res.returncode != 0 and "blocked by the test" in res.stderr


@pytest.mark.parametrize("args", [["--help"], ["train-stage1", "x.yaml", "--out", "o"], []])
def test_alter_without_its_extra_is_one_line_naming_it(args):
    res = run_blocked("""
        import importlib.util, sys
        # find_spec is what the entry point asks; the blocker raises there, like a missing package
        from alter_cli.entry import main
        sys.argv = ["alter", *sys.argv[1:]]
        main()
    """, *args)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "pip install 'alter-moire[alter]'" in lines[0] and "torch" in lines[0]
    assert res.stdout == ""


def test_pyproject_base_dependencies_are_moire_only():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in meta["dependencies"]}
    # moire's own needs (dask for `moire` sweeps on a cluster), never alter's
    assert {"numpy", "scipy", "matplotlib", "typer", "rich", "pydantic", "pyyaml"} <= base <= {
        "numpy", "scipy", "matplotlib", "typer", "rich", "pydantic", "pyyaml", "dask[distributed]"}
    alter = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in meta["optional-dependencies"]["alter"]}
    assert {"torch", "transformers", "accelerate", "peft", "safetensors", "rouge-score", "gguf"} <= alter
    assert "hypothesis" in " ".join(meta["optional-dependencies"]["dev"])
    assert meta["scripts"]["alter"] == "alter_cli.entry:main"
