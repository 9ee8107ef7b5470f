"""bench/gpu_check.sh refuses cleanly without CUDA (one line, exit 2); its table of bf16 peaks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_without_cuda_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "5"], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("gpu_check: error: no CUDA device"), proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bf16_peak_table_matches_the_most_specific_name():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.bf16_peak("NVIDIA H100 80GB HBM3") == 989.0
    assert mod.bf16_peak("NVIDIA H100 PCIe") == 756.0
    assert mod.bf16_peak("NVIDIA H200") == 989.0
    assert mod.bf16_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert mod.bf16_peak("NVIDIA A10") == 125.0
    assert mod.bf16_peak("NVIDIA L40S") == 362.0 and mod.bf16_peak("NVIDIA L4") == 121.0
    assert mod.bf16_peak("Tesla V100-SXM2-16GB") is None
