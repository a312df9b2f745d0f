//go:build !linux

package transport

import "github.com/mdlayher/vsock"

// setReceiveBuffer does nothing: AF_VSOCK listeners exist only on Linux.
func setReceiveBuffer(*vsock.Conn, uint64) error { return nil }
