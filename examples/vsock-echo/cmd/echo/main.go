// Command echo is an example appliance service for the vsock channel: it
// echoes every connection on vsock port 5000, announces itself once to the
// host by dialing CID 2 port 6000 with its boot id, and reboots the
// appliance when a connection to port 5001 sends "reboot".
package main

import (
	"bytes"
	"io"
	"log"
	"os"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

const (
	echoPort     = 5000
	controlPort  = 5001
	announcePort = 6000
	hostCID      = 2
)

func main() {
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	bootID = bytes.TrimSpace(bootID)
	go control()
	l, err := vsock.Listen(echoPort, nil)
	if err != nil {
		log.Fatalf("listen vsock port %d: %v", echoPort, err)
	}
	log.Printf("echoing on vsock port %d (boot %s)", echoPort, bootID)
	// Announce only now: whoever hears of this boot may dial the echo at
	// once.
	go announce(bootID)
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatalf("accept: %v", err)
		}
		go func() {
			defer c.Close()
			if _, err := io.Copy(c, c); err != nil {
				log.Printf("echo: %v", err)
			}
		}()
	}
}

// announce tells a host listener on port 6000 which boot this is; the
// host side may not listen, so failures are only logged.
func announce(bootID []byte) {
	for i := 0; i < 3; i++ {
		c, err := vsock.Dial(hostCID, announcePort, nil)
		if err == nil {
			_, err = c.Write(append(bootID, '\n'))
			c.Close()
			if err == nil {
				return
			}
		}
		log.Printf("announce to host port %d: %v", announcePort, err)
		time.Sleep(time.Second)
	}
}

// control reboots the machine on request. It needs to run as root.
func control() {
	l, err := vsock.Listen(controlPort, nil)
	if err != nil {
		log.Printf("listen vsock port %d: %v", controlPort, err)
		return
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 16)
		n, _ := c.Read(buf)
		c.Close()
		if string(bytes.TrimSpace(buf[:n])) == "reboot" {
			log.Printf("reboot requested")
			unix.Sync()
			if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
				log.Printf("reboot: %v", err)
			}
		}
	}
}
