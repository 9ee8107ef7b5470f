"""The worker of tests/alter/test_fsdp.py, started once by `accelerate launch --use_fsdp --fsdp_version 2
... fsdp_worker.py SPEC.json` with 2 CPU processes (gloo). One launch runs every training of the test
(starting processes costs more than training the tiny model):

    ddp       stage 1, N steps, train.distributed ddp           (FSDP_* launcher variables hidden)
    fsdp      stage 1, N steps, train.distributed fsdp          (the config key; launcher variables hidden)
    resumed   stage 1, k steps then --resume to N, train.distributed auto under the launcher's
              --use_fsdp --fsdp_version 2 (the launcher path)
    s2-ddp    stage 2 from `ddp`, M steps, DDP
    s2-fsdp   stage 2 from `ddp`, M steps, FSDP with train.gradient_checkpointing
    ub-ddp, ub-fsdp   stage 1 with train.unfreeze_backbone (bottleneck experts), N' steps, DDP / FSDP
    ub-ddp-fsdp       the same, k steps under DDP, then --resume under FSDP to N'
    ub-fsdp-ddp       k steps under FSDP, then --resume under DDP to N'

"Hidden": ACCELERATE_USE_FSDP is removed for that run, as a plain `accelerate launch --multi_gpu`
would leave the environment. SPEC.json: {"stage1": config dict, "stage2": config dict, "out": folder,
"k": steps before the stop, "eval": data.eval of the `fsdp` run}. Rank 0 writes facts.json (the
FSDP units and a selector's shard of the `fsdp` run).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

T0 = time.perf_counter()


def _mark(what: str) -> None:
    sys.stderr.write(f"fsdp_worker: {what} at {time.perf_counter() - T0:.1f} s\n")


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    from torch.distributed.fsdp import FSDPModule

    from alter_cli import runs
    from alter_cli.config import AlterConfig, Stage2Config
    from alter_cli.data import TaskRegistry, parse_jsonl
    from alter_cli.mta import mta_layers
    from alter_cli.stage2 import Stage2Wiring
    from alter_cli.train import build_stage1, run_training

    _mark("imported")
    out = Path(spec["out"])
    launcher = os.environ.get("ACCELERATE_USE_FSDP")
    assert launcher == "true", "start this worker with accelerate launch --use_fsdp --fsdp_version 2"

    def hidden(flag: bool) -> None:
        if flag:
            os.environ.pop("ACCELERATE_USE_FSDP", None)
        else:
            os.environ["ACCELERATE_USE_FSDP"] = launcher

    facts: dict = {}

    def stage1(name: str, distributed: str, eval_data: str | None = None) -> None:
        cfg = AlterConfig.model_validate(spec["stage1"])
        cfg.train.distributed = distributed
        cfg.data.eval = eval_data
        built = {}

        def setup(c):
            built["b"] = build_stage1(c)
            return built["b"]

        runs.run_stage(cfg, 1, out / name, False, False, setup_model=setup)
        model = built["b"].model
        selector = mta_layers(model)[0].selector
        facts[name] = {"units": sorted({type(m).__name__ for m in model.modules() if isinstance(m, FSDPModule)}),
                       "selector": list(selector.shape),
                       "selector_local": list(getattr(selector, "_local_tensor", selector).shape)}
        _mark(name)

    hidden(True)
    stage1("ddp", "ddp")
    stage1("fsdp", "fsdp", spec.get("eval"))
    hidden(False)
    cfg = AlterConfig.model_validate(spec["stage1"])
    examples = parse_jsonl(Path(cfg.data.train).read_text(), cfg.data.train, TaskRegistry.from_config(cfg.tasks))
    first = run_training(cfg, 1, train_examples=examples, out_dir=out / "resumed", stop_after=spec["k"])
    assert first.steps == spec["k"] and first.sharded, first
    _mark("stopped")
    again = run_training(cfg, 1, train_examples=examples, out_dir=out / "resumed", resume=True)
    assert again.steps == cfg.train.max_steps and again.sharded, again
    _mark("resumed")
    for name, distributed in (("s2-ddp", "ddp"), ("s2-fsdp", "fsdp")):
        hidden(True)
        cfg2 = Stage2Config.model_validate({**spec["stage2"], "stage1": str(out / "ddp")})
        cfg2.train.distributed = distributed
        cfg2.train.gradient_checkpointing = distributed == "fsdp"
        wiring = Stage2Wiring(cfg2)
        registry = TaskRegistry.from_dict(json.loads((out / "ddp" / "adapter_config.json").read_text())["registry"])
        try:
            runs.run_stage(cfg2, 2, out / name, False, False, setup_model=wiring.setup_model, registry=registry,
                           extra_loss=wiring.extra_loss, on_record=wiring.on_record)
        finally:
            wiring.close()
        _mark(name)
    hidden(True)
    ub = AlterConfig.model_validate(spec["stage1"])
    ub.mta.expert, ub.train.unfreeze_backbone, ub.train.max_steps = "bottleneck", True, spec["ub_steps"]
    for name, first, second in (("ub-ddp", "ddp", None), ("ub-fsdp", "fsdp", None), ("ub-ddp-fsdp", "ddp", "fsdp"),
                                ("ub-fsdp-ddp", "fsdp", "ddp")):
        ub.train.distributed = first
        run_training(ub, 1, train_examples=examples, out_dir=out / name, stop_after=None if second is None else spec["k"])
        if second is not None:
            ub.train.distributed = second
            run_training(ub, 1, train_examples=examples, out_dir=out / name, resume=True)
        _mark(name)
    if int(os.environ.get("RANK", "0")) == 0:
        (out / "facts.json").write_text(json.dumps(facts, sort_keys=True))


if __name__ == "__main__":
    main()
