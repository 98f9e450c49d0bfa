# dsas — see README.md. Targets are meant to be run as root on Debian 12.
PYTHON ?= /usr/bin/python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all deps test lint demo bench fuzz mutate man images clean install uninstall

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

# The shell scripts, by the shell that runs them. POSIX sh: the netboot initramfs's and
# the tiny image's busybox sh (boot-scripts/lib/common.sh is also sourced by dsas-init's
# bash); dash: /bin/sh of the build machine and of the Debian images; bash: dsas-init,
# rshim.sh (dsas-push runs it under bash) and CI. tests/test_shell_lint.py checks that
# every shell script in the tree is in one of the lists.
SH_SCRIPTS   := boot-scripts/initramfs/init boot-scripts/initramfs/udhcpc.script \
                boot-scripts/lib/common.sh boot-scripts/lib/push-agent \
                images/tiny/serial-shell images/tiny/profile \
                images/tiny-lvs/sshd
DASH_SCRIPTS := images/base/customize.sh images/web/customize.sh \
                images/common/customize-debian.sh tools/install-deps
BASH_SCRIPTS := boot-scripts/dsas-init provision/push/rshim.sh .ci/run

lint: deps
	$(VENV)/bin/ruff check provision lab tests bench
	$(VENV)/bin/mypy provision lab
	shellcheck -x -s sh $(SH_SCRIPTS)
	shellcheck -x -s dash $(DASH_SCRIPTS)
	shellcheck -x -s bash $(BASH_SCRIPTS)

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

# Manual pages from the commands' own --help (tools/manpages.py), into man/.
man: deps
	rm -rf man && mkdir -p man
	$(PY) tools/manpages.py man >/dev/null
	@echo "read them with: man -l man/dsas.1"

# `make install` (root): dsas in a virtualenv under PREFIX, its commands linked into
# BINDIR, the unit, the example inventory (only if there is none), the state directory
# and the boot root with the loaders. DESTDIR stages it all under another root.
# `make uninstall` reverses it and leaves SYSCONFDIR/dsas, /etc/default/dsas, STATEDIR
# and the images in the boot root alone. Runtime Debian packages: python3-venv, ipxe,
# pxelinux, syslinux-common, iproute2 (and mmdebstrap to build Debian images).
DESTDIR      ?=
PREFIX       ?= /opt/dsas
BINDIR       ?= /usr/local/bin
MANDIR       ?= /usr/local/share/man
SYSCONFDIR   ?= /etc
UNITDIR      ?= /etc/systemd/system
STATEDIR     ?= /var/lib/dsas
BOOTDIR      ?= /srv/dsas/boot
PIP_ARGS     ?=
COMMANDS     := dsas dsas-push dsas-clone
D            := $(DESTDIR)

install:
	@test "$$(id -u)" = 0 || test -n "$(DESTDIR)" || { echo "make install: run as root (or set DESTDIR)" >&2; exit 1; }
	@for f in /usr/lib/ipxe/undionly.kpxe /usr/lib/PXELINUX/pxelinux.0; do test -f $$f || { \
	    echo "make install: $$f missing: apt-get install python3-venv ipxe pxelinux syslinux-common" >&2; exit 1; }; done
	rm -rf $(D)$(PREFIX)
	$(PYTHON) -m venv $(D)$(PREFIX)
	$(D)$(PREFIX)/bin/pip install -q --disable-pip-version-check $(PIP_ARGS) .
	# Staged under DESTDIR: the scripts must name the final path.
	for f in $(D)$(PREFIX)/bin/* $(D)$(PREFIX)/pyvenv.cfg; do \
	    test -L $$f || ! grep -qI . $$f || sed -i 's|$(D)$(PREFIX)|$(PREFIX)|g' $$f; done
	mkdir -p $(D)$(PREFIX)/share/dsas
	cp -r images boot-scripts $(D)$(PREFIX)/share/dsas/
	install -d $(D)$(BINDIR) $(D)$(MANDIR)/man1 $(D)$(UNITDIR) $(D)$(SYSCONFDIR)/dsas \
	    $(D)$(SYSCONFDIR)/default $(D)$(STATEDIR) $(D)$(BOOTDIR)
	for c in $(COMMANDS); do ln -sfn $(PREFIX)/bin/$$c $(D)$(BINDIR)/$$c; done
	install -m 644 man/*.1 $(D)$(MANDIR)/man1/
	sed -e 's|/opt/dsas|$(PREFIX)|g' -e 's|/var/lib/dsas|$(STATEDIR)|g' \
	    -e 's|/srv/dsas/boot|$(BOOTDIR)|g' -e 's|/etc/|$(SYSCONFDIR)/|g' \
	    etc/dsas-serve.service > $(D)$(UNITDIR)/dsas-serve.service
	chmod 644 $(D)$(UNITDIR)/dsas-serve.service
	test -e $(D)$(SYSCONFDIR)/dsas/cluster.yaml || install -m 644 etc/dsas/cluster.yaml $(D)$(SYSCONFDIR)/dsas/
	test -e $(D)$(SYSCONFDIR)/default/dsas || install -m 644 etc/default-dsas $(D)$(SYSCONFDIR)/default/dsas
	$(D)$(PREFIX)/bin/python -c 'import sys; from provision.policy.boottree import populate_loaders; \
	    print("\n".join(populate_loaders(sys.argv[1])))' $(D)$(BOOTDIR) > $(D)$(PREFIX)/share/dsas/loaders
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed; next: edit $(SYSCONFDIR)/dsas/cluster.yaml and $(SYSCONFDIR)/default/dsas, run dsas setup, systemctl enable --now dsas-serve"

uninstall:
	@test "$$(id -u)" = 0 || test -n "$(DESTDIR)" || { echo "make uninstall: run as root (or set DESTDIR)" >&2; exit 1; }
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now dsas-serve.service 2>/dev/null || true; fi
	rm -f $(D)$(UNITDIR)/dsas-serve.service
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	for c in $(COMMANDS); do \
	    if [ "$$(readlink $(D)$(BINDIR)/$$c)" = "$(PREFIX)/bin/$$c" ]; then rm -f $(D)$(BINDIR)/$$c; fi; done
	cd man && for m in *.1; do rm -f $(D)$(MANDIR)/man1/$$m; done
	if [ -f $(D)$(PREFIX)/share/dsas/loaders ]; then \
	    while read -r f; do rm -f "$(D)$(BOOTDIR)/$$f"; done < $(D)$(PREFIX)/share/dsas/loaders; fi
	-rmdir $(D)$(BOOTDIR) 2>/dev/null
	rm -rf $(D)$(PREFIX)
	@echo "uninstalled; kept $(SYSCONFDIR)/dsas, $(SYSCONFDIR)/default/dsas, $(STATEDIR) and any images in $(BOOTDIR)"

clean:
	rm -rf $(VENV) build mutants *.egg-info .pytest_cache .mypy_cache .ruff_cache
