# poolgate's front door. `make run` and `make test` are the two commands a
# newcomer needs; CI runs `make test` (through .ci/run).

CARGO ?= cargo
DATA_DIR ?= ./var
CONFIG ?= examples/lync-pool.toml

.PHONY: run build test test-deps fresh-check lint unit e2e attack-long fuzz-smoke fuzz bench image image-test image-upgrade-test clean

## Build and run poolgate on the loopback example, data in ./var, with
## simulated Front Ends on 127.0.0.11-13 (stop one to watch it go red).
run: build
	@target/release/poolgate demo-members --config $(CONFIG) & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	target/release/poolgate run --data-dir $(DATA_DIR) --config $(CONFIG)

build:
	$(CARGO) build --locked --release -p poolgate --bin poolgate

## Everything CI checks: formatting, lints, unit, property and end-to-end tests,
## and a short run of each fuzz target. Installs what it needs first (as root
## on Debian; otherwise it names the command that does).
test: test-deps
	$(MAKE) lint unit e2e fuzz-smoke

test-deps:
	tests/install-deps

## Prove that `make test` sets itself up on a fresh Debian machine: a minimal
## root of this host's Debian with only make and this machine's Rust, the
## repository's HEAD cloned in, `make test` run there (as root, with
## debootstrap; about an hour). Not part of `make test` or CI.
fresh-check:
	tests/fresh-machine-check

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --locked -p poolgate

# End-to-end tests drive the real binary, so build it first (with test
# licence and upgrade keys, so tests can mint licences and sign bundles;
# release builds never have them).
e2e:
	$(CARGO) build --locked -p poolgate --bin poolgate --features test-license-keys,test-upgrade-keys
	$(CARGO) test --locked -p poolgate-e2e -p poolgate-license

## The attack suite's long variants (more connections, packets and holds
## than `make test` runs; a few minutes).
attack-long:
	$(CARGO) build --locked -p poolgate --bin poolgate --features test-license-keys,test-upgrade-keys
	POOLGATE_ATTACK_LONG=1 $(CARGO) test --locked -p poolgate-e2e --test attack -- --test-threads=1

# Fuzz targets need nightly and cargo-fuzz (.ci/run installs them). New
# inputs go to a scratch corpus, so the committed seed corpus stays as is;
# add a crash input to appliance/fuzz/corpus/<target>/ once it is fixed.
# The SIP targets also read the RFC 4475 torture messages in place, as a
# read-only second corpus, when shared/testdata/rfc4475 is beside the
# repository (or RFC4475_DIR names it); they are never copied in.
# The smoke run in `make test` builds unoptimised (it compiles in a fraction
# of the time and 20 s still runs the seed corpus and new inputs); `make fuzz`
# is the long, optimised run: at least a million inputs per target.
FUZZ_TARGETS ?= dns_request sip_message sip_redirect
FUZZ_SECONDS ?= 20
FUZZ_PROFILE ?= --dev
FUZZ_LIMIT ?= -max_total_time=$(FUZZ_SECONDS)
RFC4475_DIR ?= $(abspath $(CURDIR)/../shared/testdata/rfc4475)
fuzz-smoke:
	@cd appliance/fuzz && for target in $(FUZZ_TARGETS); do \
		scratch=$$(mktemp -d); extra=; \
		case $$target in sip_*) [ -d "$(RFC4475_DIR)" ] && extra="$(RFC4475_DIR)";; esac; \
		echo "fuzz $$target"; \
		$(CARGO) +nightly fuzz run $(FUZZ_PROFILE) $$target "$$scratch" corpus/$$target $$extra -- $(FUZZ_LIMIT); \
		status=$$?; rm -rf "$$scratch"; [ $$status -eq 0 ] || exit $$status; \
	done

fuzz:
	$(MAKE) fuzz-smoke FUZZ_PROFILE=--release FUZZ_LIMIT=-runs=1000000

## Benchmarks against named peers (long; not part of `make test`).
bench:
	@test -x bench/run || { echo "no benchmarks yet"; exit 0; }
	bench/run

## The bootable appliance image under target/image/: OVA (VMware), VHDX
## (Hyper-V) and the raw disk. Needs root (mmdebstrap); installs its own
## build tools on Debian. See image/README.md.
IMAGE_COMPRESSION ?= zstd
image:
	IMAGE_COMPRESSION=$(IMAGE_COMPRESSION) image/build

## Build the image (lz4: faster), check the OVA, boot the raw disk under QEMU
## and use it over the network: health, first-boot setup, login, config, DNS,
## SIP, clean power-off, second boot; the network settings on a second NIC
## in a test namespace (static, VLAN, VIP, NTP, host name, across a reboot);
## then upgrade it (image-upgrade-test).
image-test:
	image/install-deps --test
	$(MAKE) image IMAGE_COMPRESSION=lz4
	python3 image/ova.py check target/image/poolgate-$$(cat target/image/version).ova \
		--raw target/image/poolgate-$$(cat target/image/version).raw
	python3 image/boot_test.py target/image/poolgate-$$(cat target/image/version).raw
	python3 image/network_test.py target/image/poolgate-$$(cat target/image/version).raw
	$(MAKE) image-upgrade-test

## Upgrade the built image under QEMU (after `make image` or `make image-test`):
## refused bundles, an upgrade through the API to a newer version, and a
## broken version that rolls back by itself. See image/upgrade_test.py.
image-upgrade-test:
	python3 image/upgrade_test.py target/image/poolgate-$$(cat target/image/version).raw

clean:
	$(CARGO) clean
