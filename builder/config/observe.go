package config

import (
	"go.yaml.in/yaml/v3"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// Logs is ingot.yaml's logs: the remote syslog receiver and the CA that
// its certificate must chain to.
type Logs struct {
	// Remote and SpoolBytes go into appliance.json as they are.
	spec.Logs
	// CAFile is the absolute path of the CA certificate (PEM) that a
	// syslog+tls receiver's certificate must chain to; the builder copies
	// it to spec.LogsCAPath. Required with syslog+tls.
	CAFile string
}

// metrics decodes metrics: {listen: ":9100", auth: token|none}. The
// section's presence turns the endpoint on; listen defaults to
// spec.DefaultMetricsListen and auth to token.
func (d *decoder) metrics(n *yaml.Node, path string) spec.Metrics {
	m := spec.Metrics{Listen: spec.DefaultMetricsListen, Auth: spec.MetricsAuthToken}
	f, ok := d.mapping(n, path, "listen", "auth")
	if !ok {
		return m
	}
	if v, ok := f.get("listen"); ok {
		p := fieldPath(path, "listen")
		if s, ok := d.nonEmpty(v, p); ok {
			if err := spec.CheckListenAddr(s); err != nil {
				d.fail(v, p, "%v", err)
			} else {
				m.Listen = s
			}
		}
	}
	if v, ok := f.get("auth"); ok {
		p := fieldPath(path, "auth")
		if s, ok := d.nonEmpty(v, p); ok {
			switch a := spec.MetricsAuth(s); a {
			case spec.MetricsAuthToken, spec.MetricsAuthNone:
				m.Auth = a
			default:
				d.fail(v, p, "%q is not one of token, none", s)
			}
		}
	}
	return m
}

// logs decodes logs: {remote: URL, ca: FILE, spool: SIZE}.
func (d *decoder) logs(n *yaml.Node, path, dir string) Logs {
	var l Logs
	f, ok := d.mapping(n, path, "remote", "ca", "spool")
	if !ok {
		return l
	}
	v, ok := d.require(f, "remote")
	if !ok {
		return l
	}
	p := fieldPath(path, "remote")
	s, ok := d.nonEmpty(v, p)
	if !ok {
		return l
	}
	r, err := spec.ParseRemote(s)
	if err != nil {
		d.fail(v, p, "%v", err)
		return l
	}
	l.Remote = s
	if c, ok := f.get("ca"); ok {
		if s, ok := d.nonEmpty(c, fieldPath(path, "ca")); ok {
			l.CAFile = resolvePath(dir, s)
		}
	} else if r.Transport == "tls" {
		d.fail(v, p, "syslog+tls needs ca: the CA certificate (PEM) the receiver's certificate must chain to")
	}
	if c, ok := f.get("spool"); ok {
		p := fieldPath(path, "spool")
		if b, ok := d.positiveSize(c, p); ok {
			if b < spec.MinSpoolBytes || b > spec.MaxSpoolBytes {
				d.fail(c, p, "%d bytes is outside %d..%d", b, spec.MinSpoolBytes, spec.MaxSpoolBytes)
			} else {
				l.SpoolBytes = b
			}
		}
	}
	return l
}
