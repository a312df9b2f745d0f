// Package vhostuser is a vhost-user back-end for QEMU's vhost-user-vsock-pci
// device: it gives a VM virtio-vsock without the host kernel's vhost_vsock
// module, and exposes the guest's vsock ports on the host with the hybrid
// vsock convention of Firecracker and Cloud Hypervisor.
//
// A Device speaks the vhost-user protocol on a Unix socket that QEMU connects
// to (-chardev socket,path=... -device vhost-user-vsock-pci,chardev=...),
// maps guest RAM from the memfd regions QEMU passes (the VM must use a shared
// memory backend), services the rx and tx split virtqueues, and runs the
// virtio-vsock connection state machine with credit-based flow control.
//
// Host side (hybrid vsock), on the Unix socket udsPath given to NewDevice:
//   - a host program connects to udsPath, writes "CONNECT <port>\n" and reads
//     "OK <hostport>\n"; from then on the socket is a byte stream to the guest's
//     vsock port. hostport is the host-side port of the connection, allocated
//     from [1<<30, 1<<31) as Firecracker does. A bad command, a refused
//     connection or a timeout closes the socket.
//   - a guest connecting to CID 2 (the host) port P is forwarded to a Unix
//     socket listening at udsPath + "_" + P; when nobody listens there the
//     guest's connect fails with a reset.
//
// Every value the guest controls (ring indexes, descriptor addresses,
// lengths and flags, chain lengths, packet headers, connection states) is
// validated. A guest that breaks the ring protocol gets the device marked
// broken until it resets it; a guest that breaks the vsock protocol on one
// connection gets that connection reset. Buffering per connection is bounded
// by the receive buffer the device advertises.
package vhostuser
