package stage1

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ingotdev/ingot/appliance/syslog"
	"github.com/ingotdev/ingot/packer/format/spec"
)

const (
	// runSpoolDir holds the remote log spool when there is no perm: it
	// still bridges an outage, but not a reboot.
	runSpoolDir      = "/run/ingot/log-spool"
	runSpoolMaxBytes = 4 << 20
	// remoteStopWait bounds the wait for the forwarder to spool what is
	// queued at shutdown.
	remoteStopWait = 3 * time.Second
	bootIDPath     = "/proc/sys/kernel/random/boot_id"
)

// remoteLogs is the running syslog forwarder.
type remoteLogs struct {
	fw   *syslog.Forwarder
	stop context.CancelFunc
	done chan struct{}
}

// setupRemoteLogs starts the forwarder of appliance.json's logs.remote,
// once perm is mounted (or not), before any service starts, and sends
// init's lines so far and from now on through it.
func (s *System) setupRemoteLogs() {
	if s.spec == nil || s.spec.Logs.Remote == "" {
		return
	}
	fw, err := s.newForwarder()
	if err != nil {
		s.warnf("logs: remote %s: %v; lines are not sent", s.spec.Logs.Remote, err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &remoteLogs{fw: fw, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		if err := fw.Run(ctx); err != nil {
			s.Printf("logs: remote: %v", err)
		}
	}()
	for _, l := range s.initLog.Ring().Tail(0) {
		fw.Forward(InitLogName, l)
	}
	s.initLog.SetForwarder(fw)
	s.remote = r
	s.Printf("logs: sending every line to %s", s.spec.Logs.Remote)
}

func (s *System) newForwarder() (*syslog.Forwarder, error) {
	remote, err := spec.ParseRemote(s.spec.Logs.Remote)
	if err != nil {
		return nil, err
	}
	var pool *x509.CertPool
	if remote.Transport == "tls" {
		pem, err := os.ReadFile(spec.LogsCAPath)
		if err != nil {
			return nil, fmt.Errorf("the receiver's CA: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("the receiver's CA: %s holds no PEM certificate", spec.LogsCAPath)
		}
	}
	dir, bound := spec.LogSpoolDir, s.spec.Logs.EffectiveSpoolBytes()
	if !s.Status().Perm.Mounted {
		dir, bound = runSpoolDir, min(bound, runSpoolMaxBytes)
		s.warnf("logs: no perm: lines for %s wait in %s (%d bytes) and a reboot loses them", remote.Addr, dir, bound)
	}
	sp, err := syslog.OpenSpool(dir, bound)
	if err != nil {
		return nil, err
	}
	return syslog.New(syslog.Config{Remote: remote, RootCAs: pool, Hostname: s.spec.EffectiveHostname(),
		BuildID: s.spec.BuildID, BootID: bootID(), Spool: sp, Logf: s.Printf})
}

// bootID is the kernel's random id of this boot.
func bootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// RemoteLogs returns the syslog forwarder, nil without logs.remote.
func (s *System) RemoteLogs() *syslog.Forwarder {
	if s.remote == nil {
		return nil
	}
	return s.remote.fw
}

// stopRemoteLogs spools what is queued and closes the spool, before
// perm is unmounted.
func (s *System) stopRemoteLogs(wd *watchdog) {
	if s.remote == nil {
		return
	}
	s.initLog.SetForwarder(nil)
	s.remote.stop()
	s.waitPetting(s.remote.done, remoteStopWait, wd, "remote logs")
}
