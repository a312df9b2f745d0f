package netconf

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// interfacePoll is how often Configure looks again for a missing interface.
const interfacePoll = 20 * time.Millisecond

// LoopbackUp brings "lo" up; the kernel then gives it 127.0.0.1/8 and ::1.
func LoopbackUp(c *Conn) error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("netconf: lo: %w", err)
	}
	return c.SetLinkUp(lo.Index)
}

// Configure applies a static configuration: it waits until ctx ends for
// the interface (n.Interface, or the first one that is not loopback) to
// appear, brings it up, adds the address and, when n has a gateway, the
// default route. It returns the interface's name.
func Configure(ctx context.Context, c *Conn, n spec.Network) (string, error) {
	if err := n.Validate(); err != nil {
		return "", fmt.Errorf("netconf: %w", err)
	}
	if !n.Configured() {
		return "", fmt.Errorf("netconf: no address to configure")
	}
	ifc, err := waitInterface(ctx, n.Interface)
	if err != nil {
		return "", err
	}
	if err := c.SetLinkUp(ifc.Index); err != nil {
		return ifc.Name, err
	}
	if err := c.AddAddress(ifc.Index, n.Address); err != nil {
		return ifc.Name, err
	}
	if n.Gateway.IsValid() {
		onLink := !n.Address.Masked().Contains(n.Gateway)
		if err := c.AddDefaultRoute(ifc.Index, n.Gateway, onLink); err != nil {
			return ifc.Name, err
		}
	}
	return ifc.Name, nil
}

func waitInterface(ctx context.Context, name string) (net.Interface, error) {
	for {
		ifc, err := findInterface(name)
		if err == nil {
			return ifc, nil
		}
		t := time.NewTimer(interfacePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return net.Interface{}, fmt.Errorf("netconf: waiting for interface: %w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// findInterface returns the named interface or, for "", the non-loopback
// interface with the lowest index, which is the first NIC the kernel found.
func findInterface(name string) (net.Interface, error) {
	if name != "" {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return net.Interface{}, fmt.Errorf("%s: %w", name, err)
		}
		return *ifc, nil
	}
	ifcs, err := net.Interfaces()
	if err != nil {
		return net.Interface{}, err
	}
	var best *net.Interface
	for i := range ifcs {
		if ifcs[i].Flags&net.FlagLoopback != 0 {
			continue
		}
		if best == nil || ifcs[i].Index < best.Index {
			best = &ifcs[i]
		}
	}
	if best == nil {
		return net.Interface{}, fmt.Errorf("no interface besides loopback")
	}
	return *best, nil
}

// ResolvConf returns resolv.conf content naming the DNS servers.
func ResolvConf(dns []netip.Addr) []byte {
	var b bytes.Buffer
	b.WriteString("# written by ingot-init\n")
	for _, d := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return b.Bytes()
}

// Hosts returns /etc/hosts content mapping localhost and the hostname.
func Hosts(hostname string) []byte {
	var b bytes.Buffer
	b.WriteString("# written by ingot-init\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	fmt.Fprintf(&b, "127.0.1.1\t%s\n", hostname)
	return b.Bytes()
}

// WriteFile replaces path with data atomically (a reader sees the old or
// the new content, never a part), mode 0644, with renameio, the one
// atomic writer of host filesystems. The files are in /run, rebuilt every
// boot, so only the atomicity matters; the fsync it adds costs nothing on
// a tmpfs.
func WriteFile(path string, data []byte) error {
	if err := renameio.WriteFile(path, data, 0o644, renameio.WithTempDir(filepath.Dir(path))); err != nil {
		return fmt.Errorf("netconf: %s: %w", path, err)
	}
	return nil
}

// WriteInPlace makes path (created mode 0644 if missing) hold data,
// keeping its inode, so bind mounts of the file see the change; WriteFile's
// rename would leave them on the old file. The new content is written
// over the old before the file is cut to length, so a reader never finds
// it empty, though one may read a mix during the write. A file that
// already holds data is not touched.
func WriteInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("netconf: %w", err)
	}
	defer f.Close()
	old, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("netconf: %s: %w", path, err)
	}
	if bytes.Equal(old, data) {
		return nil
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		return fmt.Errorf("netconf: %s: %w", path, err)
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		return fmt.Errorf("netconf: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("netconf: %s: %w", path, err)
	}
	return nil
}
