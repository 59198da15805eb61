# clinical_mlops — every target installs the locked environment first, so each works on a fresh clone.
# Only `setup` (and `test`, which needs it) also installs the headless browser of the browser UI test.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(PYTHON) -m uv
export DAGSTER_HOME := $(CURDIR)
export DAGSTER_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export UV_NO_PROGRESS := 1

.PHONY: install setup demo test ui bench clean

install:  ## the locked environment only (what demo, ui and bench need)
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet "uv==0.13.9"
	$(UV) sync --frozen --all-groups --compile-bytecode

setup: install  ## the environment and the headless Chromium of the browser UI test
	@bash scripts/install-browser

demo: install  ## land synthetic extracts, validate, build features, train, register, evaluate
	$(UV) run --frozen clinical-mlops demo $(DEMO_ARGS)

test: setup  ## the whole suite (real-data tests skip when ../shared/data is absent)
	$(UV) run --frozen pytest -n 2 --dist loadfile $(PYTEST_ARGS)

ui: install  ## Dagster UI on 127.0.0.1:3000, MLflow UI on 127.0.0.1:5000, Evidently UI on 127.0.0.1:$${EVIDENTLY_PORT:-8000} (Ctrl-C stops all three)
	@mkdir -p data/mlflow/artifacts data/evidently
	@trap 'kill 0' INT TERM EXIT; \
	$(UV) run --frozen mlflow ui --host 127.0.0.1 --port 5000 \
	  --backend-store-uri sqlite:///data/mlflow/mlflow.db --default-artifact-root data/mlflow/artifacts & \
	DO_NOT_TRACK=true $(UV) run --frozen evidently ui --workspace data/evidently --host 127.0.0.1 \
	  --port $${EVIDENTLY_PORT:-8000} & \
	$(UV) run --frozen dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml; \
	wait

bench: install  ## issue 16's targets side by side with their yardsticks (.bench/latest/); BENCH_ARGS=--quick for the short run
	$(UV) run --frozen clinical-mlops bench $(BENCH_ARGS)

clean:  ## remove all run state (warehouse, MLflow store, Dagster storage, landing zone)
	rm -rf data/warehouse.duckdb data/warehouse.duckdb.wal data/mlflow data/dagster data/landing data/reports data/evidently
