package stage1

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// watchdogTimeoutSeconds is how long a hung init may stay hung before
	// the hardware watchdog resets the machine.
	watchdogTimeoutSeconds = 60
	watchdogPet            = 10 * time.Second
)

// watchdog is /dev/watchdog when the machine has one (QEMU i6300esb, the
// Pi's bcm2835-wdt); the zero value does nothing.
type watchdog struct{ f *os.File }

func openWatchdog(s *System) *watchdog {
	f, err := os.OpenFile("/dev/watchdog", os.O_WRONLY, 0)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			s.warnf("watchdog: %v", err)
		}
		return &watchdog{}
	}
	timeout := watchdogTimeoutSeconds
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.WDIOC_SETTIMEOUT, timeout); err != nil {
		s.warnf("watchdog: set timeout %ds: %v (using the driver's)", timeout, err)
	}
	s.Printf("watchdog: armed, %ds", timeout)
	w := &watchdog{f: f}
	w.pet()
	return w
}

func (w *watchdog) pet() {
	if w == nil || w.f == nil {
		return
	}
	_, _ = w.f.Write([]byte{0})
}

// keyPower is KEY_POWER from linux/input-event-codes.h.
const keyPower = 116

// inputEventBytes is sizeof(struct input_event): a struct timeval, then
// type u16, code u16, value s32.
const inputEventBytes = int(unsafe.Sizeof(unix.Timeval{})) + 8

// watchPowerButton reads every input device for a KEY_POWER press (the
// ACPI power button with the button and evdev modules, gpio-keys on arm64)
// and asks for a power-off. It returns when there are no input devices.
func watchPowerButton(s *System) {
	devs, _ := filepath.Glob("/dev/input/event*")
	for _, d := range devs {
		f, err := os.Open(d)
		if err != nil {
			s.warnf("power button: %v", err)
			continue
		}
		go func() {
			defer f.Close()
			if pressed(f) {
				s.Printf("power button pressed (%s)", d)
				_ = s.requestShutdown(context.Background(), shutdownRequest{reason: "power button"})
			}
		}()
	}
}

// pressed reads input events until a KEY_POWER press or a read error.
func pressed(r io.Reader) bool {
	buf := make([]byte, inputEventBytes)
	tv := inputEventBytes - 8
	for {
		if _, err := io.ReadFull(r, buf); err != nil {
			return false
		}
		typ := binary.NativeEndian.Uint16(buf[tv:])
		code := binary.NativeEndian.Uint16(buf[tv+2:])
		value := int32(binary.NativeEndian.Uint32(buf[tv+4:]))
		if typ == unix.EV_KEY && code == keyPower && value == 1 {
			return true
		}
	}
}
