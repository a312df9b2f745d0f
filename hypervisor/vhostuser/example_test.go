package vhostuser_test

import (
	"context"
	"log"
	"net"

	"github.com/ingotdev/ingot/hypervisor/qemu"
	"github.com/ingotdev/ingot/hypervisor/vhostuser"
	"github.com/ingotdev/ingot/mgmt/transport"
)

// A VM with vsock but no vhost_vsock module on the host: the back-end
// listens before QEMU starts; host programs reach guest port 1024 through
// the hybrid socket.
func ExampleDevice_ServeListener() {
	ctx := context.Background()
	dev, err := vhostuser.NewDevice(3, "/run/vm1/vsock.sock")
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: "/run/vm1/vhost.sock", Net: "unix"})
	if err != nil {
		log.Fatal(err)
	}
	go dev.ServeListener(ctx, l)

	// hypervisor/qemu gives guest RAM as shared memory, which the back-end
	// maps, and adds vhost-user-vsock-pci on the socket.
	m := &qemu.Machine{Arch: "amd64", MemoryMiB: 512, Kernel: "/run/vm1/vmlinuz", Cmdline: "console=ttyS0",
		VhostUserVsock: "/run/vm1/vhost.sock", RunDir: "/run/vm1"}
	vm, err := m.Command(qemu.AccelTCG)
	if err != nil {
		log.Fatal(err)
	}
	if err := vm.Start(); err != nil {
		log.Fatal(err)
	}

	c, err := transport.Dial(ctx, "unix:///run/vm1/vsock.sock?port=1024")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// c is a byte stream to the guest's AF_VSOCK listener on port 1024.
}
