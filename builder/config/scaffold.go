package config

import (
	"bytes"
	"text/template"
)

var scaffoldTemplate = template.Must(template.New("ingot.yaml").Parse(`# ingot.yaml: the appliance "{{.Name}}". Every field and its default:
# https://github.com/ingotdev/ingot (config package documentation).
name: {{.Name}}
# hostname: {{.Name}}                 # default: the name
targets: [vm-amd64]                   # vm-amd64, vm-arm64, rpi, rpi-armv7
# kernel:                             # default for VMs: Debian's cloud kernel from the ingot cache
#   vm-amd64: debian:./kernels/linux-image-cloud-amd64.deb
services:
  - name: {{.Name}}
    go: ./cmd/{{.Name}}               # a package of this module, or module/path@version
    args: [-listen, ":8080"]
    # env: {GREETING: hello}
    # restart: always                 # always | on-failure | never
    # after: [other-service]
    # user: nobody                    # the default; or root, UID, UID:GID
    # resources: {memory: 128Mi, cpu: "0.5", pids: 256}
    # log_buffer: 1Mi
    # grace: 10s                      # SIGTERM to SIGKILL on shutdown
    # wait_for_clock: false           # first start only once NTP has set the clock
    # health: {http: "http://127.0.0.1:8080/healthz", interval: 5s, retries: 3, restart: true}
  # - name: web
  #   image: docker.io/library/nginx:1.27
  #   volumes: ["/perm/web:/var/lib/web"]
# management:
#   vsock_port: 1024
#   tcp: ":7443"                      # TLS; default on rpi, off in VMs
# network: dhcp                       # dhcp | none | {static: {address: 192.168.1.10/24, gateway: 192.168.1.1, dns: [192.168.1.1]}}
#   # rpi: {wifi: {ssid: home, psk_file: .ingot/wifi-psk, firmware_deb: firmware-brcm80211.deb}}
# clock: {ntp: [0.pool.ntp.org, 1.pool.ntp.org, 2.pool.ntp.org, 3.pool.ntp.org]}   # [] turns NTP off
# perm: 64Mi                          # persistent ext4 partition; false for none
# disk: {boot_size: 64Mi, root_size: 256Mi}
# update: {health_window: 30s}        # a trial boot is decided by then (sooner: 10s up, checks passing 3 in a row)
# release: 1                          # raise it with every release: ingot update refuses a lower one (-allow-downgrade)
# token_file: .ingot/token            # written by ingot new; the image holds only its hash
`))

// Scaffold returns the ingot.yaml that `ingot new` writes for an appliance
// called name (check it with ValidName first): one Go service at
// ./cmd/NAME and every other setting shown commented out with its default.
func Scaffold(name string) []byte {
	var b bytes.Buffer
	// The template and its input are fixed; Execute cannot fail on a
	// bytes.Buffer.
	_ = scaffoldTemplate.Execute(&b, struct{ Name string }{name})
	return b.Bytes()
}
