package qemu

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseForward(t *testing.T) {
	tests := []struct {
		in   string
		want Forward
		err  string
	}{
		{"tcp:8080:80", Forward{Proto: "tcp", HostPort: 8080, GuestPort: 80}, ""},
		{"udp:0.0.0.0:53:53", Forward{Proto: "udp", HostAddr: "0.0.0.0", HostPort: 53, GuestPort: 53}, ""},
		{"sctp:1:2", Forward{}, "protocol"},
		{"tcp:8080", Forward{}, "want PROTO"},
		{"tcp:0:80", Forward{}, "host port"},
		{"tcp:80:70000", Forward{}, "guest port"},
	}
	for _, tt := range tests {
		got, err := ParseForward(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseForward(%q) error = %v, want mention of %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseForward(%q) = %+v, %v, want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestArgs(t *testing.T) {
	m := &Machine{Arch: "amd64", MemoryMiB: 256, Kernel: "k", Initrd: "i", Cmdline: "console=ttyS0",
		Disk: "d.img", Forwards: []Forward{{Proto: "tcp", HostPort: 8080, GuestPort: 80}},
		VhostUserVsock: "/run/v.sock", RunDir: "/run/x"}
	args, err := m.Args(AccelTCG)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{
		"-accel tcg", "-machine q35,memory-backend=mem",
		"memory-backend-memfd,id=mem,size=256M,share=on",
		"hostfwd=tcp:127.0.0.1:8080-:80", "vhost-user-vsock-pci,chardev=vsock0",
		"socket,id=vsock0,path=/run/v.sock", "-no-reboot", "-kernel k", "-initrd i",
		"file=d.img,format=raw", "-qmp unix:/run/x/qmp.sock,server=on,wait=off",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("Args(tcg) = %q, missing %q", line, want)
		}
	}
	if _, err := m.Args(AccelAuto); err == nil {
		t.Error("Args(auto) succeeded, want an error: auto must be resolved first")
	}
	if strings.Contains(line, "-rtc") {
		t.Errorf("Args(tcg) = %q, want no -rtc without RTCStart (the host's time)", line)
	}
	m.Arch = "arm64"
	m.RTCStart = time.Date(2001, 1, 1, 0, 0, 0, 0, time.FixedZone("X", 3600))
	args, _ = m.Args(AccelTCG)
	if line := strings.Join(args, " "); !strings.Contains(line, "virt,memory-backend=mem") || !strings.Contains(line, "-cpu max") {
		t.Errorf("Args(arm64) = %q, want the virt machine with -cpu max", line)
	}
	if line := strings.Join(args, " "); !strings.Contains(line, "-rtc base=2000-12-31T23:00:00") {
		t.Errorf("Args(RTCStart 2001-01-01 +01:00) = %q, want -rtc base=2000-12-31T23:00:00 (UTC)", line)
	}
	m.RTCStart = time.Time{}
	// -vsock kernel: the host's vhost_vsock with a fixed guest CID, and
	// no vhost-user device beside it.
	m.Arch, m.VhostUserVsock, m.KernelVsockCID = "amd64", "", 42
	args, _ = m.Args(AccelTCG)
	if line := strings.Join(args, " "); !strings.Contains(line, "-device vhost-vsock-pci,guest-cid=42") || strings.Contains(line, "vhost-user") {
		t.Errorf("Args(kernel vsock) = %q, want vhost-vsock-pci,guest-cid=42 only", line)
	}
	m.Arch = "riscv64"
	if _, err := m.Args(AccelTCG); err == nil {
		t.Error("Args(riscv64) succeeded, want error")
	}
	// A reboot resets in place; the Pi's SD card and mini UART console.
	m = &Machine{Arch: "arm64", Board: BoardRaspi3b, Kernel: "k", DTB: "pi.dtb", Cmdline: "c", Disk: "sd.img", RunDir: "/run/x", ResetOnReboot: true}
	args, err = m.Args(AccelTCG)
	line = strings.Join(args, " ")
	for _, want := range []string{"-machine raspi3b", "-dtb pi.dtb", "file=sd.img,if=sd,format=raw", "-serial null -serial stdio"} {
		if err != nil || !strings.Contains(line, want) {
			t.Errorf("Args(raspi3b) = %q, %v, missing %q", line, err, want)
		}
	}
	if strings.Contains(line, "-no-reboot") || strings.Contains(line, "memory-backend") {
		t.Errorf("Args(raspi3b, ResetOnReboot) = %q, want neither -no-reboot nor a memory backend", line)
	}
	m.Arch = "amd64"
	if _, err := m.Args(AccelTCG); err == nil {
		t.Error("Args(raspi3b on amd64) succeeded, want error")
	}
}

func TestResolveCrossArchIsTCG(t *testing.T) {
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	if a, _ := Resolve(t.Context(), AccelAuto, other); a != AccelTCG {
		t.Errorf("Resolve(auto, %s) = %s, want tcg for a foreign guest", other, a)
	}
	if a, _ := Resolve(t.Context(), AccelKVM, other); a != AccelKVM {
		t.Errorf("Resolve(kvm, %s) = %s, want the explicit choice kept", other, a)
	}
}

// TestArgsUEFI: firmware as two pflash drives, the code read-only; no
// direct kernel boot; the disk's format passed on and checked.
func TestArgsUEFI(t *testing.T) {
	m := &Machine{Arch: "amd64", Kernel: "k", Cmdline: "c", Disk: "d.qcow2", DiskFormat: "qcow2", RunDir: "/run/x",
		Firmware: &Firmware{Code: "/fw/CODE.fd", Vars: "/run/x/efivars.fd"}}
	args, err := m.Args(AccelTCG)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{"-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd",
		"-drive if=pflash,format=raw,unit=1,file=/run/x/efivars.fd", "file=d.qcow2,format=qcow2,if=none"} {
		if !strings.Contains(line, want) {
			t.Errorf("Args(uefi) = %q, missing %q", line, want)
		}
	}
	if strings.Contains(line, "-kernel") || strings.Contains(line, "-append") {
		t.Errorf("Args(uefi) = %q boots a kernel directly", line)
	}
	for bus, want := range map[string]string{"virtio-scsi": "-device virtio-scsi-pci,id=scsi0 -device scsi-hd,drive=disk0,bus=scsi0.0",
		"nvme": "-device nvme,drive=disk0,serial=ingot0"} {
		m.DiskBus = bus
		args, err := m.Args(AccelTCG)
		if line := strings.Join(args, " "); err != nil || !strings.Contains(line, want) || strings.Contains(line, "virtio-blk") {
			t.Errorf("Args(disk bus %s) = %q, %v; want %q", bus, line, err, want)
		}
	}
	m.DiskBus = "ide"
	if _, err := m.Args(AccelTCG); err == nil || !strings.Contains(err.Error(), "ide") {
		t.Errorf("Args with disk bus ide: %v, want an error naming it", err)
	}
	m.DiskBus = ""
	m.DiskFormat = "raw,file.locking=off"
	if _, err := m.Args(AccelTCG); err == nil || !strings.Contains(err.Error(), "raw,file.locking=off") {
		t.Errorf("Args with disk format %q: %v, want an error naming it", m.DiskFormat, err)
	}
}

// TestUEFIPrivateVars: each VM gets its own copy of the variable store,
// kept across its boots.
func TestUEFIPrivateVars(t *testing.T) {
	dir := t.TempDir()
	fw, err := UEFI("amd64", dir)
	if err != nil {
		t.Fatalf("%v (scripts/setup.sh installs ovmf)", err)
	}
	if fw.Vars != filepath.Join(dir, "efivars.fd") || fw.Code == fw.Vars {
		t.Fatalf("firmware %+v", fw)
	}
	if err := os.WriteFile(fw.Vars, []byte("written by the guest"), 0o600); err != nil {
		t.Fatal(err)
	}
	again, err := UEFI("amd64", dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(again.Vars); string(b) != "written by the guest" {
		t.Errorf("a second UEFI call replaced the VM's variable store")
	}
	if _, err := UEFI("riscv64", dir); err == nil {
		t.Error("UEFI(riscv64) succeeded")
	}
}
