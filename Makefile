# Two commands do everything on a fresh machine:
#   make demo   install the runtime and annotate the bundled demo clip  → out/demo_annotated.mp4
#   make test   install runtime + every extra (mediapipe, train, web, batch, teach, dev) and run all tests
# Both install this project into .venv (editable), so face-gender, face-gender-train, face-gender-web
# and face-gender-batch work from any folder: .venv/bin/face-gender --help
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DEMO := assets/face-demographics-walking-and-pause.mp4

.PHONY: demo test install install-dev install-mediapipe system-deps lint benchmark web clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

system-deps:
	@bash scripts/system_deps.sh

install: system-deps $(PY)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .

# MediaPipe's own detector (--detector-backend mediapipe); the runtime runs without it.
install-mediapipe: install
	$(PIP) install -r requirements-mediapipe.txt

install-dev: system-deps $(PY)
	$(PIP) install -r requirements-dev.txt -r requirements-mediapipe.txt -r requirements-train.txt $(if $(wildcard requirements-web.txt),-r requirements-web.txt) -r requirements-batch.txt -r requirements-teach.txt
	$(PIP) install --no-deps -e .

demo: install
	@mkdir -p out
	$(VENV)/bin/face-gender --source $(DEMO) --output out/demo_annotated.mp4 --jsonl out/demo.jsonl --no-display
	@echo "wrote out/demo_annotated.mp4 and out/demo.jsonl"

test: install-dev
	@bash scripts/system_deps.sh --with-chromium >/dev/null 2>&1 || echo "note: Chromium could not be installed (needs apt and root or sudo): the browser tests will be skipped"
	$(PY) -m pytest -q

lint: install-dev
	$(PY) -m ruff check .

benchmark: install
	$(PY) scripts/benchmark.py --source $(DEMO) --loop --frames 300

web: install
	$(PY) -m pip install -q -r requirements-web.txt
	$(PY) -m realtime.web

clean:
	rm -rf out test-artifacts .pytest_cache .ruff_cache
