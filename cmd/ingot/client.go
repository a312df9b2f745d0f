package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/hypervisor/vm"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/certpin"
)

// mgmtFlags are the flags of every command that talks to a running
// appliance's agent.
type mgmtFlags struct {
	dir        string
	target     string
	tokenFile  string
	certSHA256 string
	timeout    time.Duration
}

const mgmtTargetUsage = "[-C DIR] [-target vsock://CID:PORT | unix:///PATH[?port=N] | https://HOST:PORT] [-token-file FILE]"

func addMgmtFlags(fs *flag.FlagSet) *mgmtFlags {
	f := &mgmtFlags{}
	fs.StringVar(&f.dir, "C", ".", "appliance directory: its ingot.yaml gives the token file and vsock port, and without -target the VM of 'ingot run -C DIR' is used")
	fs.StringVar(&f.target, "target", "", "agent address: vsock://CID:PORT, unix:///PATH.sock[?port=N] (hybrid vsock; default port from the config), tcp://HOST:PORT or https://HOST:PORT")
	fs.StringVar(&f.tokenFile, "token-file", "", "management token file (default: the config's, DIR/"+config.DefaultTokenFile+")")
	fs.StringVar(&f.certSHA256, "cert-sha256", "", "pinned SHA-256 of the agent's TLS certificate, for https:// targets (default: that of the config's tls_cert)")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "how long to wait for the agent")
	return f
}

// loadConfig reads DIR/ingot.yaml; nil without one.
func (f *mgmtFlags) loadConfig() (*config.Config, error) {
	path := filepath.Join(f.dir, config.FileName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return config.Load(path)
}

// client builds the agent client the flags describe.
func (f *mgmtFlags) client() (*mgmt.Client, error) {
	var cfg *config.Config
	var cfgErr error
	cfgLoaded := false
	getConfig := func() (*config.Config, error) {
		if !cfgLoaded {
			cfg, cfgErr = f.loadConfig()
			cfgLoaded = true
		}
		return cfg, cfgErr
	}
	port := func() (uint32, error) {
		c, err := getConfig()
		if err != nil {
			return 0, err
		}
		if c != nil && c.Management.VsockPort != 0 {
			return c.Management.VsockPort, nil
		}
		return config.DefaultVsockPort, nil
	}

	target := f.target
	if target == "" {
		img, err := f.localImage()
		if err != nil {
			return nil, err
		}
		p, err := port()
		if err != nil {
			return nil, err
		}
		runDir, err := vm.DefaultRunDir(img)
		if err != nil {
			return nil, err
		}
		sock := vm.VsockPath(runDir)
		if _, err := os.Stat(sock); err != nil {
			return nil, fmt.Errorf("no VM socket %s for %s: is 'ingot run -C %s' running? (or give -target)", sock, img, f.dir)
		}
		target = hybridTarget(sock, p)
	} else if strings.HasPrefix(target, "unix:") {
		u, err := url.Parse(target)
		if err != nil {
			return nil, usageError{fmt.Sprintf("-target %q: %v", target, err)}
		}
		if !u.Query().Has("port") {
			p, err := port()
			if err != nil {
				return nil, err
			}
			q := u.Query()
			q.Set("port", strconv.FormatUint(uint64(p), 10))
			u.RawQuery = q.Encode()
			target = u.String()
		}
	}

	tokenFile := f.tokenFile
	if tokenFile == "" {
		c, err := getConfig()
		if err != nil {
			return nil, err
		}
		tokenFile = filepath.Join(f.dir, filepath.FromSlash(config.DefaultTokenFile))
		if c != nil && c.TokenFile != "" {
			tokenFile = c.TokenFile
		}
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("management token: %w (give -token-file or -C DIR)", err)
	}
	if len(strings.TrimSpace(string(tok))) == 0 {
		return nil, fmt.Errorf("management token: %s is empty", tokenFile)
	}
	var opts []mgmt.ClientOption
	pin := f.certSHA256
	if pin == "" && strings.HasPrefix(target, "https:") {
		// The appliance directory holds the certificate the image serves.
		c, err := getConfig()
		if err != nil {
			return nil, err
		}
		certFile := filepath.Join(f.dir, filepath.FromSlash(config.DefaultTLSCertFile))
		if c != nil {
			certFile = c.Management.TLSCertFile
		}
		b, err := os.ReadFile(certFile)
		if err != nil {
			return nil, fmt.Errorf("https target: no pin: %w (give -cert-sha256 or -C DIR)", err)
		}
		if pin, err = certpin.OfPEM(b); err != nil {
			return nil, fmt.Errorf("%s: %w", certFile, err)
		}
	}
	if pin != "" {
		opts = append(opts, mgmt.WithCertSHA256(pin))
	}
	c, err := mgmt.NewClient(target, string(tok), opts...)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return c, nil
}

// localImage finds the VM image 'ingot build' wrote in DIR, as 'ingot run'
// does, to locate the VM's socket.
func (f *mgmtFlags) localImage() (string, error) {
	matches, _ := filepath.Glob(filepath.Join(f.dir, "*-vm-*.img"))
	if len(matches) != 1 {
		return "", usageError{fmt.Sprintf("-target is required (found no single %s to find a running VM by)", filepath.Join(f.dir, "*-vm-*.img"))}
	}
	return filepath.Abs(matches[0])
}

func hybridTarget(sock string, port uint32) string {
	u := url.URL{Scheme: "unix", Path: sock, RawQuery: "port=" + strconv.FormatUint(uint64(port), 10)}
	return u.String()
}

// withTimeout bounds a request by the -timeout flag.
// call runs fn with a client of the flags' agent and the -timeout
// deadline, and closes the client.
func (f *mgmtFlags) call(ctx context.Context, fn func(context.Context, *mgmt.Client) error) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := f.withTimeout(ctx)
	defer cancel()
	return fn(ctx, c)
}

func (f *mgmtFlags) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if f.timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, f.timeout)
}
