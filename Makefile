# cim: two commands do everything on a fresh Debian machine with Python 3.11:
#   make demo   install system packages + venv, run pipelines/demo.toml, say where the results are
#   make test   same set-up, then the whole test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# open3d needs libusb and OpenMP; VTK/pyvista render off-screen through EGL/OSMesa; chromium runs the CesiumJS
# viewer test; nodejs/npm install the Khronos glTF validator and CesiumJS for the tests.
APT_PACKAGES := libusb-1.0-0 libgomp1 libgl1 libegl1 libosmesa6 chromium nodejs npm

.PHONY: demo test system venv js bench clean

demo: venv js
	$(BIN)/cim run pipelines/demo.toml
	@echo
	@echo "Results are in out/demo: report.json (what was made), stac/catalog.json (every product),"
	@echo "  3dtiles/pointcloud, 3dtiles-buildings, 3dtiles-terrain (3D Tiles 1.1), buildings.city.json (CityJSON 2.0"
	@echo "  LoD1.2 + LoD2.2), buildings.gml (CityGML 2.0, AdV LoD2 profile), dtm.vrt / dsm.vrt (mosaics of 0.5 m COG"
	@echo "  tiles), las/ (classified LAZ tiles), pointcloud.copc.laz (COPC)."
	@echo "View:  $(BIN)/cim view out/demo    -> open http://127.0.0.1:8321/ (CesiumJS, served locally)"
	@echo "       QGIS: open out/demo/*.vrt and out/demo/las/*.laz; Python: notebooks/01-quickstart.ipynb"

test: venv js
	$(BIN)/python -m pytest -q

system: $(VENV)/.system
$(VENV)/.system:
	@if command -v apt-get >/dev/null 2>&1; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    if command -v node >/dev/null 2>&1; then missing=$$(echo $$missing | tr ' ' '\n' | grep -vx 'nodejs\|npm'); fi; \
	    $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	else echo "not a Debian system: install $(APT_PACKAGES) yourself"; fi
	@mkdir -p $(VENV) && touch $@

venv: system $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test,bench]"
	touch $@

js: $(VENV)/.js
$(VENV)/.js: $(wildcard tests/js/package-lock.json)
	@if [ -f tests/js/package-lock.json ]; then npm ci --silent --prefix tests/js; fi
	@touch $@

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf out .pytest_cache
