# bitsd: `make run` for a local instance, `make test` for every check.
CARGO ?= cargo
DB ?= bitsd.db
WEB_PORT ?= 8008
CONTROL_PORT ?= 8888

.PHONY: run test build lint bench bench-abuse test-deps

build:
	$(CARGO) build --release

# Builds, loads the wiki into $(DB) (created when missing), serves on
# http://127.0.0.1:$(WEB_PORT)/ with the device port on 127.0.0.1:$(CONTROL_PORT).
run: build
	./target/release/bitsd bootstrap --db $(DB)
	./target/release/bitsd --db $(DB) --web-address 127.0.0.1 --web-port $(WEB_PORT) \
		--control-local-address 127.0.0.1 --control-local-port $(CONTROL_PORT)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# The browser tests drive Debian's Chromium (no browser download); the
# proxy tests run Debian's nginx in front of bitsd with deploy/nginx.conf.
test-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| (echo "installing Debian's chromium for the browser tests" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	@test -x /usr/sbin/nginx \
		|| (echo "installing Debian's nginx for the proxy tests" \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx)

test: test-deps lint
	$(CARGO) test

# Load run (see BENCHMARKS.md): installs wrk when missing, then runs the
# generator in benches/load.rs against the release binary.
bench:
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(CARGO) bench --bench forecast
	$(CARGO) bench --bench load
	$(CARGO) bench --bench abuse

# What strangers can take (see BENCHMARKS.md): logins, failed logins,
# connections from one address, against the release binary.
bench-abuse:
	$(CARGO) bench --bench abuse
