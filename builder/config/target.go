package config

import (
	"fmt"
	"strings"
)

// Target is a kind of machine an image is built for. Each target fixes the
// CPU architecture, the boot flow and the kernel source.
type Target string

// The targets ingot builds images for.
const (
	// TargetVMAmd64 is an x86-64 VM booted by `ingot run` (QEMU q35).
	TargetVMAmd64 Target = "vm-amd64"
	// TargetVMArm64 is an arm64 VM (QEMU virt).
	TargetVMArm64 Target = "vm-arm64"
	// TargetRPi is a Raspberry Pi 3, 4, 5 or Zero 2 W with a 64-bit userland.
	TargetRPi Target = "rpi"
	// TargetRPiArmv7 is a Raspberry Pi with a 32-bit (ARMv7) userland.
	TargetRPiArmv7 Target = "rpi-armv7"
)

// allTargets lists every target in a stable order.
var allTargets = []Target{TargetVMAmd64, TargetVMArm64, TargetRPi, TargetRPiArmv7}

// ParseTarget returns the target named s.
func ParseTarget(s string) (Target, error) {
	for _, t := range allTargets {
		if string(t) == s {
			return t, nil
		}
	}
	return "", fmt.Errorf("%q is not one of %s", s, targetList())
}

func targetList() string {
	names := make([]string, len(allTargets))
	for i, t := range allTargets {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}

func (t Target) String() string { return string(t) }

// Valid reports whether t is a known target.
func (t Target) Valid() bool {
	_, err := ParseTarget(string(t))
	return err == nil
}

// Arch returns the Go architecture (GOARCH) of the target's userland.
func (t Target) Arch() string {
	switch t {
	case TargetVMAmd64:
		return "amd64"
	case TargetVMArm64, TargetRPi:
		return "arm64"
	case TargetRPiArmv7:
		return "arm"
	}
	return ""
}

// GOARM returns the GOARM value for 32-bit ARM targets, "" otherwise.
func (t Target) GOARM() string {
	if t == TargetRPiArmv7 {
		return "7"
	}
	return ""
}

// Variant returns the OCI platform variant ("v7" for 32-bit ARM, "v8" is
// left implicit for arm64 as registries do), "" otherwise.
func (t Target) Variant() string {
	if t == TargetRPiArmv7 {
		return "v7"
	}
	return ""
}

// IsVM reports whether the target is a virtual machine (booted by the host
// side boot loader with an initramfs, managed over vsock).
func (t Target) IsVM() bool {
	return t == TargetVMAmd64 || t == TargetVMArm64
}
