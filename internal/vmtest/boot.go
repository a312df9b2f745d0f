package vmtest

import (
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ingotdev/ingot/hypervisor/qemu"
)

// accelEnv names the variable that picks the accelerator of Boot: tcg
// (the default: nested KVM on CI hosts has been seen to fail with
// emulation errors or hang), kvm or auto.
const accelEnv = "INGOT_VM_ACCEL"

// consoleTailBytes is how much of the console a failed test logs.
const consoleTailBytes = 8000

// VM is a QEMU process that Boot started.
type VM struct {
	Machine *qemu.Machine
	// Console is the guest's serial console and QEMU's own messages.
	Console *Console
	cmd     *exec.Cmd
	exited  chan struct{}
	err     error // QEMU's exit, once exited is closed
}

// Boot starts QEMU for m, built by hypervisor/qemu's command line, and
// collects its console in the VM's Console (and m.Console, when set).
// m.RunDir, when empty, becomes a short temporary directory (Unix socket
// paths are limited to 107 bytes). QEMU is killed when the test ends; a
// failed test logs the end of the console.
func Boot(t testing.TB, m *qemu.Machine) *VM {
	t.Helper()
	accel := qemu.AccelTCG
	if s := os.Getenv(accelEnv); s != "" {
		a, err := qemu.ParseAccel(s)
		if err != nil {
			t.Fatalf("vmtest: %s: %v", accelEnv, err)
		}
		accel, _ = qemu.Resolve(t.Context(), a, m.Arch)
	}
	if m.RunDir == "" {
		dir, err := os.MkdirTemp("", "vm")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		m.RunDir = dir
	}
	cmd, err := m.Command(accel)
	if err != nil {
		t.Fatal(err)
	}
	v := &VM{Machine: m, Console: &Console{}, cmd: cmd, exited: make(chan struct{})}
	var out io.Writer = v.Console
	if m.Console != nil {
		out = io.MultiWriter(v.Console, m.Console)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("vmtest: starting %s: %v", cmd.Args[0], err)
	}
	go func() {
		v.err = cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		v.Kill()
		if t.Failed() {
			t.Logf("console of %s:\n%s", cmd.Args[0], v.Console.Tail(consoleTailBytes))
		}
	})
	return v
}

// Exited is closed when QEMU has ended.
func (v *VM) Exited() <-chan struct{} { return v.exited }

// Wait waits up to timeout for QEMU to end and returns its exit error; a
// QEMU still running then fails the test.
func (v *VM) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-v.exited:
		return v.err
	case <-time.After(timeout):
		t.Fatalf("vmtest: QEMU still runs after %v", timeout)
		return nil
	}
}

// WaitFor waits up to timeout until the console shows each of want and
// fails the test if it does not or QEMU ends first.
func (v *VM) WaitFor(t testing.TB, timeout time.Duration, want ...string) {
	t.Helper()
	deadline := time.After(timeout)
	for _, w := range want {
		for !strings.Contains(v.Console.String(), w) {
			select {
			case <-v.exited:
				t.Fatalf("vmtest: QEMU ended (%v) before the console showed %q", v.err, w)
			case <-deadline:
				t.Fatalf("vmtest: the console did not show %q within %v", w, timeout)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// PowerButton presses the guest's ACPI power button.
func (v *VM) PowerButton(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := v.Machine.PowerButton(ctx); err != nil {
		t.Fatalf("vmtest: %v", err)
	}
}

// Kill stops QEMU at once, as a power cut would, and waits for it.
func (v *VM) Kill() {
	_ = v.cmd.Process.Kill()
	<-v.exited
}
