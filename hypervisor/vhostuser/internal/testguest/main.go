// Command testguest is /init of the initramfs the vhostuser VM test boots.
// It loads the kernel modules that /etc/ingot/stage0.json lists, in that
// order (the test writes the initramfs with packer/initramfs, the way stage0
// of ingot-init finds its modules: virtio PCI and the virtio vsock transport
// with their dependencies), then serves on vsock:
//
//	5000  echo: copies everything back, half-closes at EOF
//	5001  control: "reboot\n" reboots the guest
//	5002  sink: reads to EOF, answers "<bytes>\n" (no hashing: sha256 is
//	      slow under TCG and would measure the guest CPU, not the channel;
//	      the echo port carries the integrity checks)
//	5003  source: reads "<n>\n", sends n bytes of the test pattern
//
// and once per boot dials host CID 2 port 6000 and sends its boot id.
// It prints "testguest: ready" on the console when it listens.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ingotdev/ingot/appliance/kmod"
	"github.com/ingotdev/ingot/packer/format/spec"

	"github.com/ingotdev/ingot/mgmt/transport"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// Pattern is the byte stream the source port sends; the test generates
// the same one. Blocks of patternBlockBytes repeat.
const patternBlockBytes = 1 << 20

func pattern() []byte {
	r := rand.New(rand.NewPCG(42, 42))
	b := make([]byte, patternBlockBytes)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func main() {
	if err := setup(); err != nil {
		fmt.Fprintln(os.Stderr, "testguest:", err)
		hang()
	}
	for port, serve := range map[uint32]func(net.Conn){5000: echo, 5001: control, 5002: sink, 5003: source} {
		l, err := transport.Listen(port)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testguest:", err)
			hang()
		}
		go acceptLoop(l, serve)
	}
	fmt.Println("testguest: ready")
	go dialHost()
	hang()
}

func hang() {
	for {
		time.Sleep(time.Hour)
	}
}

func setup() error {
	if err := os.MkdirAll("/dev", 0o755); err != nil {
		return err
	}
	if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	if con, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
		for fd := 0; fd < 3; fd++ {
			unix.Dup2(int(con.Fd()), fd)
		}
	}
	os.MkdirAll("/proc", 0o755)
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	return loadModules()
}

// loadModules loads the modules of stage0.json in the order listed, which
// is a dependency order.
func loadModules() error {
	cfg, err := spec.LoadStage0(spec.Stage0Path)
	if err != nil {
		return err
	}
	return errors.Join(kmod.LoadAll(cfg.Modules)...)
}

func acceptLoop(l net.Listener, serve func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "testguest: accept:", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}

type halfCloser interface{ CloseWrite() error }

func echo(c net.Conn) {
	buf := make([]byte, 256<<10)
	if _, err := io.CopyBuffer(c, c, buf); err != nil {
		fmt.Fprintln(os.Stderr, "testguest: echo:", err)
	}
	c.(halfCloser).CloseWrite()
	// Wait for the host to close, so the close is orderly.
	io.Copy(io.Discard, c)
}

func control(c net.Conn) {
	line, _ := bufio.NewReader(c).ReadString('\n')
	if strings.TrimSpace(line) == "reboot" {
		fmt.Println("testguest: rebooting")
		unix.Sync()
		unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	}
}

func sink(c net.Conn) {
	n, err := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
	if err != nil {
		fmt.Fprintln(os.Stderr, "testguest: sink:", err)
		return
	}
	fmt.Fprintf(c, "%d\n", n)
}

func source(c net.Conn) {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	n, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		return
	}
	p := pattern()
	for n > 0 {
		k := min(n, int64(len(p)))
		if _, err := c.Write(p[:k]); err != nil {
			fmt.Fprintln(os.Stderr, "testguest: source:", err)
			return
		}
		n -= k
	}
	c.(halfCloser).CloseWrite()
	io.Copy(io.Discard, c)
}

// dialHost tells the host (through <uds>_6000) which boot this is.
func dialHost() {
	id, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	for attempt := 0; attempt < 50; attempt++ {
		c, err := vsock.Dial(vsock.Host, 6000, nil)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		fmt.Fprintf(c, "boot %s", id)
		c.Close()
		return
	}
	fmt.Fprintln(os.Stderr, "testguest: could not reach host port 6000")
}
