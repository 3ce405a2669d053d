# Release binaries and the watchdog image.
#
#   make dist                 static (musl) binaries for amd64 and arm64: dist/fwatchdog-<arch>, each
#                             with dist/fwatchdog-<arch>.sha256 (check with `cd dist && sha256sum -c`)
#   make dist-amd64           one architecture (or dist-arm64)
#   make image [IMAGE=name]   the watchdog image (Dockerfile) for this machine's architecture, with
#                             plain `docker build`; default name fwatchdog:latest
#
# Rust targets are added with rustup when missing. The C compilers (mimalloc is C, and arm64 is
# linked by gcc) are Debian packages: musl-tools for amd64, gcc-aarch64-linux-gnu for arm64; a
# missing one stops the build with the `apt-get install` line that adds it.

CARGO ?= cargo
DOCKER ?= docker
IMAGE ?= fwatchdog:latest
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
# The commit: `fwatchdog --version` prints it, and the image's labels carry it.
REVISION := $(or $(shell git rev-parse HEAD 2>/dev/null),unknown)
# The repository's public address, for the image's labels (the release workflow passes it).
SOURCE ?= $(or $(shell git config --get remote.origin.url 2>/dev/null | grep '^https://'),unknown)
HOST_ARCH := $(shell uname -m | sed -e 's/^x86_64$$/amd64/' -e 's/^aarch64$$/arm64/')

# Per architecture (Docker's names): the Rust target, its C compiler and that compiler's package.
triple_amd64 := x86_64-unknown-linux-musl
triple_arm64 := aarch64-unknown-linux-musl
cc_amd64 := musl-gcc
cc_arm64 := aarch64-linux-gnu-gcc
package_amd64 := musl-tools
package_arm64 := gcc-aarch64-linux-gnu

.PHONY: dist dist-amd64 dist-arm64 image

dist: dist-amd64 dist-arm64

dist-amd64 dist-arm64: dist-%:
	@command -v $(cc_$*) >/dev/null || { echo "make: $(cc_$*) not found, needed for $*: apt-get install $(package_$*)" >&2; exit 1; }
	@if command -v rustup >/dev/null; then \
	  rustup target list --installed | grep -qx '$(triple_$*)' || rustup target add '$(triple_$*)'; \
	fi
	FWATCHDOG_SHA=$(REVISION) $(CARGO) build --release --locked --target $(triple_$*)
	@mkdir -p dist
	@# A new file, renamed into place: a test may be running the old one.
	cp $(TARGET_DIR)/$(triple_$*)/release/fwatchdog dist/.fwatchdog-$*.new
	mv -f dist/.fwatchdog-$*.new dist/fwatchdog-$*
	cd dist && sha256sum fwatchdog-$* > fwatchdog-$*.sha256

image: dist-$(HOST_ARCH)
	$(DOCKER) build --build-arg TARGETARCH=$(HOST_ARCH) --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$(REVISION) --build-arg SOURCE=$(SOURCE) -t $(IMAGE) .
