"""A checkpoint save killed at every one of its file operations (issue 15 item 8), both stages.

The process is "killed" at file operation k: from operation k on, every file operation raises a
BaseException (nothing more reaches the disk, no clean-up handler can write), exactly what a SIGKILL
there leaves behind. The save of step 2 (replacing the checkpoint of step 1) is run once
uninterrupted and counted, then killed at each k = 1 .. N on a copy of the step-1 folder. After
`recover_checkpoint` every copy must be, file for file and byte for byte, either the step-1 or the
step-2 checkpoint, with a manifest that verifies; `--resume` from one recovered copy of each kind
ends bitwise equal to an uninterrupted run.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alter_cli import train
from alter_cli.checkpoint import ADAPTER_WEIGHTS, CheckpointError, recover_checkpoint, verify_checkpoint
from alter_cli.config import AlterConfig, Stage2Config
from alter_cli.data import TaskRegistry, parse_jsonl
from alter_cli.stage2 import Stage2Wiring

from .conftest import stage1_dict


class Killed(BaseException):
    """The simulated kill: a BaseException, so no `except Exception` handler swallows it."""


class FileOps:
    """Counts the file operations of the code it is armed around; with `kill_at`, operation k and
    every later one raise Killed."""

    WRITE_MODES = set("wax+")

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.mp, self.armed, self.count, self.kill_at, self.dead = monkeypatch, False, 0, None, False
        import accelerate.utils.other
        import safetensors.torch

        for mod, name in [(os, n) for n in ("rename", "replace", "unlink", "remove", "rmdir", "mkdir", "chmod",
                                             "fsync", "link", "symlink", "truncate")] + [
                (shutil, "rmtree"), (shutil, "move"), (shutil, "copyfile"), (torch, "save"),
                (safetensors.torch, "save_file"), (accelerate.utils.other, "safe_save_file")]:
            monkeypatch.setattr(mod, name, self._wrap(getattr(mod, name)))
        real_open = builtins.open

        def opener(file, mode="r", *a, **k):
            if self.WRITE_MODES & set(mode):
                self._tick()
            return real_open(file, mode, *a, **k)

        monkeypatch.setattr(builtins, "open", opener)
        monkeypatch.setattr(io, "open", opener)

    def _tick(self) -> None:
        if not self.armed:
            return
        if self.dead:
            raise Killed
        self.count += 1
        if self.count == self.kill_at:
            self.dead = True
            raise Killed

    def _wrap(self, fn):
        def wrapped(*a, **k):
            self._tick()
            return fn(*a, **k)

        return wrapped

    def arm(self, kill_at: int | None) -> None:
        self.armed, self.count, self.kill_at, self.dead = True, 0, kill_at, False

    def disarm(self) -> None:
        self.armed = False


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} | {
        p.relative_to(folder).as_posix() + "/": b"" for p in sorted(folder.rglob("*")) if p.is_dir()}


def sweep_save_faults(monkeypatch, tmp_path: Path, at_step: int) -> dict:
    """Patch train._save: at `at_step`, before the real save, run the kill-at-every-k sweep on copies."""
    ops = FileOps(monkeypatch)
    real_save = train._save
    found: dict = {"old": 0, "new": 0, "folders": {}}

    def save(run, step):
        if step == at_step and "n_ops" not in found:
            home = run.out_dir
            old = snapshot(home)
            try:
                ref = tmp_path / "uninterrupted"
                shutil.copytree(home, ref)
                run.out_dir = ref
                ops.arm(None)
                real_save(run, step)
                ops.disarm()
                found["n_ops"] = n = ops.count
                new = snapshot(ref)
                assert new != old
                for k in range(1, n + 1):
                    copy = tmp_path / f"kill-{k}"
                    shutil.copytree(home, copy)
                    run.out_dir = copy
                    ops.arm(k)
                    with pytest.raises(Killed):
                        real_save(run, step)
                    ops.disarm()
                    recover_checkpoint(copy)
                    got = snapshot(copy)
                    kind = "old" if got == old else "new" if got == new else None
                    assert kind is not None, (k, sorted(set(got) ^ set(new)), sorted(set(got) ^ set(old)))
                    verify_checkpoint(copy, with_state=True)
                    found[kind] += 1
                    if kind in found["folders"]:
                        shutil.rmtree(copy)
                    else:
                        found["folders"][kind] = copy
            finally:
                ops.disarm()
                run.out_dir = home
        real_save(run, step)

    monkeypatch.setattr(train, "_save", save)
    return found


def _stage1_cfg(model_dir, data, **train_kw):
    return AlterConfig.model_validate(stage1_dict(model_dir, data, **({"max_steps": 3, "save_every": 1} | train_kw)))


def _examples(cfg, registry=None):
    return parse_jsonl(Path(cfg.data.train).read_text(), cfg.data.train, registry or TaskRegistry.from_config(cfg.tasks))


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / ADAPTER_WEIGHTS)), load_file(str(b / ADAPTER_WEIGHTS))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    sa, sb = load_file(str(a / "state" / "model.safetensors")), load_file(str(b / "state" / "model.safetensors"))
    assert all(torch.equal(sa[key], sb[key]) for key in sa) and sa.keys() == sb.keys()


def _check_sweep(found, run_resume, reference: Path) -> None:
    print("kill sweep:", {k: v for k, v in found.items() if k != "folders"})
    assert found["n_ops"] >= 20  # every write, flush, chmod, rename and removal of one save
    assert found["old"] >= 1 and found["new"] >= 1, found  # kills before and after the commit point
    assert found["old"] + found["new"] == found["n_ops"]
    for kind, folder in found["folders"].items():
        res = run_resume(folder)
        assert res.steps == 3, kind
        _same_weights(folder, reference)


def test_stage1_save_killed_at_every_file_operation_resumes_bitwise(tiny_llama_dir, synthetic_jsonl, tmp_path,
                                                                     monkeypatch):
    cfg = _stage1_cfg(tiny_llama_dir, synthetic_jsonl)
    ex = _examples(cfg)
    train.run_training(cfg, 1, train_examples=ex, out_dir=tmp_path / "reference")
    with monkeypatch.context() as mp:
        found = sweep_save_faults(mp, tmp_path, at_step=2)
        train.run_training(cfg, 1, train_examples=ex, out_dir=tmp_path / "swept")
    _same_weights(tmp_path / "swept", tmp_path / "reference")
    _check_sweep(found, lambda d: train.run_training(cfg, 1, train_examples=ex, out_dir=d, resume=True),
                 tmp_path / "reference")


def test_stage2_save_killed_at_every_file_operation_resumes_bitwise(tiny_llama_dir, synthetic_jsonl, tmp_path,
                                                                     monkeypatch):
    s1 = AlterConfig.model_validate(stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=2))
    train.run_training(s1, 1, train_examples=_examples(s1), out_dir=tmp_path / "s1")
    d = stage1_dict(tiny_llama_dir, synthetic_jsonl, max_steps=3, save_every=1)
    cfg = Stage2Config.model_validate({"stage1": str(tmp_path / "s1"), "data": d["data"], "train": d["train"],
                                       "mta": {"num_shared_experts": 2}})
    registry = TaskRegistry.from_config(s1.tasks)
    ex = _examples(cfg, registry)

    def run(out, resume=False):
        wiring = Stage2Wiring(cfg)
        try:
            return train.run_training(cfg, 2, train_examples=ex, out_dir=out, resume=resume,
                                      setup_model=wiring.setup_model, extra_loss=wiring.extra_loss)
        finally:
            wiring.close()

    run(tmp_path / "reference")
    with monkeypatch.context() as mp:
        found = sweep_save_faults(mp, tmp_path, at_step=2)
        run(tmp_path / "swept")
    _same_weights(tmp_path / "swept", tmp_path / "reference")
    _check_sweep(found, lambda folder: run(folder, resume=True), tmp_path / "reference")


def test_half_finished_legacy_swap_and_mixed_files_are_handled(tiny_llama_dir, synthetic_jsonl, tmp_path):
    """The swap of earlier versions could leave only `.state-old` (resume said: no checkpoint) or the new
    state/ with the old adapter files (resume continued from the wrong weights)."""
    cfg = _stage1_cfg(tiny_llama_dir, synthetic_jsonl, max_steps=2)
    ex = _examples(cfg)
    out = tmp_path / "run"
    train.run_training(cfg, 1, train_examples=ex, out_dir=out, stop_after=1)
    (out / "checkpoint_manifest.json").unlink()  # as an older alter wrote it
    os.rename(out / "state", out / ".state-old")
    assert recover_checkpoint(out) == "put back state/ from an interrupted checkpoint swap (.state-old)"
    assert (out / "state").is_dir() and not (out / ".state-old").exists()
    newer = tmp_path / "newer"
    train.run_training(cfg, 1, train_examples=ex, out_dir=newer)  # step 2
    shutil.rmtree(out / "state")
    shutil.copytree(newer / "state", out / "state")  # new state/, old adapter files (no manifest)
    with pytest.raises(CheckpointError, match="state/ is of step 2, the adapter files of step 1"):
        train.run_training(cfg, 1, train_examples=ex, out_dir=out, resume=True)
    shutil.copy(newer / ADAPTER_WEIGHTS, out / ADAPTER_WEIGHTS)  # with a manifest: any foreign file is named
    shutil.copy(newer / "checkpoint_manifest.json", out / "checkpoint_manifest.json")
    with pytest.raises(CheckpointError, match="adapter_config.json does not belong to step 2"):
        train.run_training(cfg, 1, train_examples=ex, out_dir=out, resume=True)
