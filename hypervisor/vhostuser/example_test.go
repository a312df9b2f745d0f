package vhostuser_test

import (
	"context"
	"log"
	"net"
	"os/exec"

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

	qemu := exec.CommandContext(ctx, "qemu-system-x86_64",
		"-m", "512", "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
		"-machine", "q35,memory-backend=mem",
		"-chardev", "socket,id=vs,path=/run/vm1/vhost.sock",
		"-device", "vhost-user-vsock-pci,chardev=vs",
		// -kernel, -initrd, disks ...
	)
	if err := qemu.Start(); err != nil {
		log.Fatal(err)
	}

	c, err := transport.Dial(ctx, "unix:///run/vm1/vsock.sock?port=1024")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// c is a byte stream to the guest's AF_VSOCK listener on port 1024.
}
