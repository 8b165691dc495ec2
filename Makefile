# Fresh-machine entry points: `make demo` and `make test` (both create .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test test-all demo demo-points clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	# torch first, by exact pin, so nothing pulls a different (CUDA) build later
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(VENV)/bin/python -c "import rclpy, bisenet_ros; print('bisenet_ros ready, rclpy', rclpy.__name__)"
	touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m bisenet_ros.tools.demo

# the semantic point cloud: synthetic drive with exact depth -> node ~/points -> demo_output/points/cloud.png
demo-points: setup
	$(PY) -m bisenet_ros.tools.demo_points

clean:
	rm -rf $(VENV) build install log demo_output *.egg-info
