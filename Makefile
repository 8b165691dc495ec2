# Fresh-machine entry points: `make demo` and `make test` (both create .venv first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup test test-all demo demo-points clean

setup: $(STAMP)

# vision_msgs (LabelInfo): no PyPI wheel carries it; built from the unmodified upstream sources in
# ../shared/vision_msgs into the venv when that folder is there (recipe and the two wheel faults it
# works around: ../shared/vision_msgs/README.md). Without it the node runs with ~/label_info off.
VISION_MSGS ?= ../shared/vision_msgs
VISION_STAMP := $(VENV)/.vision_msgs
VISION_BUILD := $(VENV)/build/vision_msgs
ifneq ($(wildcard $(VISION_MSGS)/vision_msgs/package.xml),)
setup: $(VISION_STAMP)
endif

$(VISION_STAMP): $(VISION_MSGS)/vision_msgs/package.xml | $(STAMP)
	@echo "building vision_msgs from $(VISION_MSGS) into $(VENV) (about 1.5 min, once)"
	mkdir -p $(VENV)/build
	V=$$(cd $(VENV) && pwd) && S=$$(cd $(VISION_MSGS) && pwd) && \
	export AMENT_PREFIX_PATH=$$V PATH=$$V/bin:$$PATH && \
	cmake -S $$S/vision_msgs -B $(VISION_BUILD) -DCMAKE_PREFIX_PATH=$$V -DCMAKE_INSTALL_PREFIX=$$V \
	  -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$$V/bin/python \
	  -DCMAKE_PROJECT_INCLUDE=$$S/fix_wheel_py_includes.cmake > $(VENV)/build/vision_msgs.log 2>&1 && \
	cmake --build $(VISION_BUILD) -j2 >> $(VENV)/build/vision_msgs.log 2>&1 && \
	cmake --install $(VISION_BUILD) >> $(VENV)/build/vision_msgs.log 2>&1 && rm -rf $(VISION_BUILD) || \
	{ tail -20 $(VENV)/build/vision_msgs.log; echo "vision_msgs build failed (log: $(VENV)/build/vision_msgs.log)"; exit 1; }
	$(PY) -c "from vision_msgs.msg import LabelInfo; print('vision_msgs ready:', LabelInfo.__name__)"
	touch $@

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

# FOXGLOVE=1: afterwards keep the node serving the Foxglove live view on ws://127.0.0.1:8765 (docs/node.md)
FOXGLOVE ?=
demo: setup
	$(PY) -m bisenet_ros.tools.demo $(if $(FOXGLOVE),--foxglove $(if $(filter 1,$(FOXGLOVE)),8765,$(FOXGLOVE)))

# the semantic point cloud: synthetic drive with exact depth -> node ~/points -> demo_output/points/cloud.png
demo-points: setup
	$(PY) -m bisenet_ros.tools.demo_points

clean:
	rm -rf $(VENV) build install log demo_output *.egg-info
