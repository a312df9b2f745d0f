# Two entry points do all set-up on a fresh Debian/Ubuntu machine:
#   make demo   build the hello appliance and boot it (curl localhost:8080)
#   make test   run every test, VM tests included
SHELL := /bin/bash
KERNELS := $(CURDIR)/.cache/kernels
export INGOT_KERNEL_DEB ?= $(KERNELS)/linux-image-cloud-amd64.deb
export INGOT_KERNEL_DEB_ARM64 ?= $(KERNELS)/linux-image-cloud-arm64.deb
export INGOT_BUSYBOX_DEB_ARM64 ?= $(CURDIR)/.cache/debs/busybox-static-arm64.deb
export INGOT_WIFI_FIRMWARE_DEB ?= $(CURDIR)/.cache/debs/firmware-brcm80211-all.deb
GO ?= go
TEST_TIMEOUT ?= 75m

.PHONY: setup ingot demo test vet

setup:
	scripts/setup.sh

ingot:
	$(GO) build -o bin/ingot ./cmd/ingot

demo: setup ingot
	bin/ingot build -C examples/hello -target vm-amd64 -o .cache/hello.img
	@echo "booting; in another terminal: curl localhost:8080   (Ctrl-C stops the VM)"
	bin/ingot run -C examples/hello -image .cache/hello.img -forward tcp:8080:8080

vet:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

test: setup vet
	$(GO) test -count=1 -p 2 -timeout $(TEST_TIMEOUT) ./...
