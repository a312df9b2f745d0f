// Package cmdline parses the kernel command line parameters that tie the
// boot stages together (packer/layout lists them): which partitions hold the
// root slot, the boot files and the persistent data, whether this boot is a
// trial, and an optional static network.
package cmdline

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/ingotdev/ingot/packer/format/gpt"
	"github.com/ingotdev/ingot/packer/format/layout"
	"github.com/ingotdev/ingot/packer/format/slot"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// ProcPath is where the kernel shows its command line.
const ProcPath = "/proc/cmdline"

// Params are the ingot parameters of a command line. Zero values mean the
// parameter was absent.
type Params struct {
	// Root, Boot and Perm are the PARTUUIDs of ingot.root, ingot.boot and
	// ingot.perm.
	Root, Boot, Perm gpt.GUID
	// Slot is ingot.slot.
	Slot slot.Name
	// Trial is ingot.trial=1.
	Trial bool
	// Network is ingot.ip=ADDR/PREFIX,GATEWAY,DNS[,DNS...]; the gateway and
	// DNS servers may be empty.
	Network spec.Network
}

// Read parses the running kernel's command line. Like Parse it returns the
// parameters it understood along with any error.
func Read() (Params, error) {
	b, err := os.ReadFile(ProcPath)
	if err != nil {
		return Params{}, fmt.Errorf("cmdline: %w", err)
	}
	return Parse(string(b))
}

// Parse extracts the ingot parameters from a kernel command line. Unknown
// parameters are ignored, and a parameter given twice takes its last value,
// as the kernel does. A malformed parameter is reported in the error (all of
// them, joined) while the others are still returned, so stage0 can boot
// with a bad ingot.ip.
func Parse(cmdline string) (Params, error) {
	var p Params
	var errs []error
	for _, f := range Fields(cmdline) {
		key, val, _ := strings.Cut(f, "=")
		var err error
		switch key {
		case layout.ParamRoot:
			p.Root, err = parsePartUUID(val)
		case layout.ParamBoot:
			p.Boot, err = parsePartUUID(val)
		case layout.ParamPerm:
			p.Perm, err = parsePartUUID(val)
		case layout.ParamSlot:
			if s := slot.Name(val); s.Valid() {
				p.Slot = s
			} else {
				err = fmt.Errorf("%q is not a or b", val)
			}
		case layout.ParamTrial:
			switch val {
			case "1":
				p.Trial = true
			case "0":
				p.Trial = false
			default:
				err = fmt.Errorf("%q is not 0 or 1", val)
			}
		case layout.ParamIP:
			p.Network, err = parseIP(val)
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cmdline: %s: %w", key, err))
		}
	}
	return p, errors.Join(errs...)
}

// Fields splits a command line into parameters the way the kernel does:
// at spaces outside double quotes, with the quotes removed.
func Fields(cmdline string) []string {
	var out []string
	var cur strings.Builder
	inQuote, inField := false, false
	for _, r := range cmdline {
		switch {
		case r == '"':
			inQuote = !inQuote
			inField = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if inField {
				out = append(out, cur.String())
				cur.Reset()
				inField = false
			}
		default:
			cur.WriteRune(r)
			inField = true
		}
	}
	if inField {
		out = append(out, cur.String())
	}
	return out
}

func parsePartUUID(val string) (gpt.GUID, error) {
	s, ok := strings.CutPrefix(val, "PARTUUID=")
	if !ok {
		return gpt.GUID{}, fmt.Errorf("%q: want PARTUUID=<guid>", val)
	}
	g, err := gpt.ParseGUID(s)
	if err != nil {
		return gpt.GUID{}, err
	}
	if g.IsZero() {
		return gpt.GUID{}, fmt.Errorf("%q: the zero GUID names no partition", val)
	}
	return g, nil
}

func parseIP(val string) (spec.Network, error) {
	parts := strings.Split(val, ",")
	var n spec.Network
	var err error
	if n.Address, err = netip.ParsePrefix(parts[0]); err != nil {
		return spec.Network{}, fmt.Errorf("address: %w", err)
	}
	if len(parts) > 1 && parts[1] != "" {
		if n.Gateway, err = netip.ParseAddr(parts[1]); err != nil {
			return spec.Network{}, fmt.Errorf("gateway: %w", err)
		}
	}
	for i, d := range parts[min(2, len(parts)):] {
		if d == "" {
			continue
		}
		a, err := netip.ParseAddr(d)
		if err != nil {
			return spec.Network{}, fmt.Errorf("dns %d: %w", i+1, err)
		}
		n.DNS = append(n.DNS, a)
	}
	if err := n.Validate(); err != nil {
		return spec.Network{}, err
	}
	return n, nil
}
