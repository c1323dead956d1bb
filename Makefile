# bitsd: `make run` for a local instance, `make test` for every check.
CARGO ?= cargo
DB ?= bitsd.db
WEB_PORT ?= 8008
CONTROL_PORT ?= 8888

# Installation: `make && sudo make install` under $(DESTDIR)$(PREFIX).
# install never builds (so root never runs cargo); BUILD_DIR names
# already-built binaries of another profile, installed as they are.
PREFIX ?= /usr/local
DESTDIR ?=
BUILD_DIR ?= target/release
BINDIR = $(PREFIX)/bin
MAN1DIR = $(PREFIX)/share/man/man1
BASHDIR = $(PREFIX)/share/bash-completion/completions
ZSHDIR = $(PREFIX)/share/zsh/site-functions
FISHDIR = $(PREFIX)/share/fish/vendor_completions.d
UNITDIR = $(PREFIX)/lib/systemd/system
DOCDIR = $(PREFIX)/share/doc/bitsd

PROGRAMS = bitsd usermanage
# Every file `make install` writes and `make uninstall` removes.
INSTALLED = $(PROGRAMS:%=$(BINDIR)/%) $(PROGRAMS:%=$(MAN1DIR)/%.1) \
	$(PROGRAMS:%=$(BASHDIR)/%) $(PROGRAMS:%=$(ZSHDIR)/_%) $(PROGRAMS:%=$(FISHDIR)/%.fish) \
	$(UNITDIR)/bitsd.service $(DOCDIR)/bitsd.toml.example $(DOCDIR)/nginx.conf

VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
TARGET = $(shell rustc -vV | sed -n 's/^host: //p')
DIST = bitsd-$(VERSION)-$(TARGET)

.PHONY: run fake fake-history test build lint bench bench-abuse bench-integrations bench-push bench-fanout test-deps install uninstall dist

build:
	$(CARGO) build --release

# Builds, loads the wiki into $(DB) (created when missing), serves on
# http://127.0.0.1:$(WEB_PORT)/ with the device port on 127.0.0.1:$(CONTROL_PORT).
run: build
	./target/release/bitsd bootstrap --db $(DB)
	./target/release/bitsd --db $(DB) --web-address 127.0.0.1 --web-port $(WEB_PORT) \
		--control-local-address 127.0.0.1 --control-local-port $(CONTROL_PORT)

# With `make run` going, from another terminal and with the same DB and
# CONTROL_PORT: DAYS plausible past days into $(DB), or a device on the
# device port (Ctrl-C stops it).
DAYS ?= 60
fake-history: build
	./target/release/bitsd --db $(DB) fake history --days $(DAYS)

fake: build
	./target/release/bitsd --db $(DB) --control-local-address 127.0.0.1 \
		--control-local-port $(CONTROL_PORT) fake device

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --document-private-items

# The browser tests drive Debian's Chromium (no browser download); the
# install test checks the unit with systemd-analyze and renders the man pages;
# the proxy tests run Debian's nginx in front of bitsd with deploy/nginx.conf;
# the MQTT tests start Debian's mosquitto; the README's first screen runs
# curl; the push interoperability test runs the npm package web-push-testing
# (pinned in tests/npm) on Node.js, installed again when its lock changes.
test-deps:
	@command -v curl >/dev/null 2>&1 \
		|| (echo "installing Debian's curl for the README's first screen" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| (echo "installing Debian's chromium for the browser tests" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	@command -v systemd-analyze >/dev/null 2>&1 && command -v man >/dev/null 2>&1 \
		|| (echo "installing Debian's systemd and man-db for the install test" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd man-db)
	@test -x /usr/sbin/nginx \
		|| (echo "installing Debian's nginx for the proxy tests" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx)
	@test -x /usr/sbin/mosquitto && command -v mosquitto_passwd >/dev/null 2>&1 \
		|| (echo "installing Debian's mosquitto for the MQTT tests" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto)
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
		|| (echo "installing Debian's nodejs and npm for the push interoperability test" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm)
	@cmp -s tests/npm/package-lock.json target/npm/installed.json \
		|| (echo "installing web-push-testing from the npm registry into target/npm" \
		&& mkdir -p target/npm && cp tests/npm/package.json tests/npm/package-lock.json target/npm/ \
		&& npm ci --prefix target/npm --ignore-scripts --no-audit --no-fund --loglevel=error \
		&& cp tests/npm/package-lock.json target/npm/installed.json)

test: test-deps lint
	$(CARGO) test

# Load run (see BENCHMARKS.md): installs wrk when missing, then runs the
# generator in benches/load.rs against the release binary.
bench: test-deps
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(CARGO) bench --bench forecast
	$(CARGO) bench --bench startup
	$(CARGO) bench --bench load
	$(CARGO) bench --bench integrations
	$(CARGO) bench --bench push
	$(CARGO) bench --bench fanout
	$(CARGO) bench --bench abuse

# What strangers can take (see BENCHMARKS.md): logins, failed logins,
# connections from one address, against the release binary.
bench-abuse:
	$(CARGO) bench --bench abuse

# MQTT and webhooks on and off, side by side (needs mosquitto: make test-deps).
bench-integrations: test-deps
	$(CARGO) bench --bench integrations

# Web Push to 10,000 subscribers of a local push service (see BENCHMARKS.md).
bench-push:
	$(CARGO) bench --bench push

# One event to 10,000 websocket clients: against the fan-out floor of
# ../shared/bench, and during a Web Push storm (see BENCHMARKS.md).
bench-fanout:
	$(CARGO) bench --bench fanout

# The man pages and completions are written by the binary being installed
# (`bitsd install-files`, from its own command-line definitions), then
# copied with fixed modes; the unit's ExecStart follows PREFIX.
install:
	@for program in $(PROGRAMS); do test -x $(BUILD_DIR)/$$program \
		|| { echo "$(BUILD_DIR)/$$program is missing: run make first, or give BUILD_DIR" >&2; exit 1; }; done
	@set -e; files=$$(mktemp -d); trap 'rm -rf "$$files"' EXIT; \
	$(BUILD_DIR)/bitsd install-files "$$files" >/dev/null; \
	sed -e 's|/usr/local/bin/bitsd|$(BINDIR)/bitsd|' -e 's|PREFIX/|$(PREFIX)/|g' -e 's|under PREFIX|under $(PREFIX)|' \
		deploy/bitsd.service > "$$files/bitsd.service"; \
	install -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(MAN1DIR)' '$(DESTDIR)$(BASHDIR)' \
		'$(DESTDIR)$(ZSHDIR)' '$(DESTDIR)$(FISHDIR)' '$(DESTDIR)$(UNITDIR)' '$(DESTDIR)$(DOCDIR)'; \
	install -m 0755 $(PROGRAMS:%=$(BUILD_DIR)/%) '$(DESTDIR)$(BINDIR)'; \
	install -m 0644 $(PROGRAMS:%="$$files"/man/man1/%.1) '$(DESTDIR)$(MAN1DIR)'; \
	install -m 0644 $(PROGRAMS:%="$$files"/bash-completion/completions/%) '$(DESTDIR)$(BASHDIR)'; \
	install -m 0644 $(PROGRAMS:%="$$files"/zsh/site-functions/_%) '$(DESTDIR)$(ZSHDIR)'; \
	install -m 0644 $(PROGRAMS:%="$$files"/fish/vendor_completions.d/%.fish) '$(DESTDIR)$(FISHDIR)'; \
	install -m 0644 "$$files/bitsd.service" '$(DESTDIR)$(UNITDIR)'; \
	install -m 0644 deploy/bitsd.toml.example deploy/nginx.conf '$(DESTDIR)$(DOCDIR)'
	@echo "installed under $(DESTDIR)$(PREFIX)"

# Removes what `make install` wrote, and the documentation folder once empty.
uninstall:
	rm -f $(INSTALLED:%='$(DESTDIR)%')
	@if [ -d '$(DESTDIR)$(DOCDIR)' ]; then rmdir '$(DESTDIR)$(DOCDIR)' 2>/dev/null \
		|| echo "$(DESTDIR)$(DOCDIR) kept: it holds other files"; fi

# target/dist/$(DIST).tar.gz: an installation under /usr/local laid out as
# that prefix (bin/, lib/, share/), with README.md, docs/ and LICENSE.
dist: $(if $(filter target/release,$(BUILD_DIR)),build)
	rm -rf target/dist/stage target/dist/$(DIST) target/dist/$(DIST).tar.gz
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/target/dist/stage PREFIX=/usr/local \
		BUILD_DIR=$(BUILD_DIR)
	mv target/dist/stage/usr/local target/dist/$(DIST)
	rm -rf target/dist/stage
	install -m 0644 README.md LICENSE target/dist/$(DIST)
	install -d target/dist/$(DIST)/docs
	install -m 0644 docs/*.md target/dist/$(DIST)/docs
	tar -C target/dist -czf target/dist/$(DIST).tar.gz $(DIST)
	@echo "target/dist/$(DIST).tar.gz"
