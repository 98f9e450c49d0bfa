# dsas — see README.md. Targets are meant to be run as root on Debian 12.
PYTHON ?= /usr/bin/python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all deps test lint demo bench fuzz mutate man images clean

all: test

deps: $(STAMP)
	@tools/install-deps

# The virtualenv is rebuilt when pyproject.toml changes; otherwise this is a no-op.
$(STAMP): pyproject.toml tools/apt-packages.txt
	@tools/install-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check provision tests bench
	$(VENV)/bin/mypy provision

# Node images (netboot initramfs, tiny test image) into the boot tree's image store.
# Cached: a rebuild with unchanged inputs does nothing.
BOOT_ROOT ?= build/boot
IMAGES ?= netboot tiny
images: deps
	$(VENV)/bin/dsas image build $(IMAGES) --boot-root $(BOOT_ROOT) --cache build/image-cache

demo: deps
	$(VENV)/bin/dsas demo

bench: deps
	$(PY) -m bench $(BENCH_ARGS)

# The protocol fuzz tests (marker `fuzz`) with DSAS_FUZZ_CASES cases each: 10,000 in
# `make test`, 100,000 here. Each checks that the server still answers a real client.
FUZZ_CASES ?= 100000
fuzz: deps
	DSAS_FUZZ_CASES=$(FUZZ_CASES) $(PY) -m pytest -m fuzz $(PYTEST_ARGS)

# Mutation testing (mutmut) of provision/policy and provision/protocol against the fast
# unit tests, module by module, with a kill rate per module (tools/mutate). Tens of
# minutes: not part of `make test`. MUTATE_MODULES=policy.leases runs one module.
MUTATE_MODULES ?=
mutate: deps
	nice -n 15 $(PY) tools/mutate $(MUTATE_MODULES)

# Manual pages from the commands' own --help (click-man), into man/.
man: deps
	rm -rf man && mkdir -p man
	for prog in dsas dsas-push dsas-clone; do \
	    $(VENV)/bin/click-man $$prog --target man --man-version $$($(PY) -c 'import provision; print(provision.__version__)') >/dev/null; \
	done
	@echo "read them with: man -l man/dsas.1"

clean:
	rm -rf $(VENV) build mutants *.egg-info .pytest_cache .mypy_cache .ruff_cache
