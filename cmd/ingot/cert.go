package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/mgmt"
	"github.com/ingotdev/ingot/packer/format/certpin"
)

// runCert writes the management TLS certificate and key of an appliance
// directory (the ones its ingot.yaml names) and prints the pin.
func runCert(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	fset := newFlagSet("cert", "[-C DIR] [-force]", stderr)
	dir := fset.String("C", ".", "appliance directory")
	force := fset.Bool("force", false, "replace an existing certificate (clients must learn the new pin, and running appliances keep the old one until updated)")
	if err := parseArgs(fset, args, 0, "no arguments expected"); err != nil {
		return err
	}
	cfg, err := config.Load(filepath.Join(*dir, config.FileName))
	if err != nil {
		return err
	}
	pin, err := writeCertificate(cfg.Name, cfg.Management.TLSCertFile, cfg.Management.TLSKeyFile, *force)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "certificate %s\nsha256 %s\n", cfg.Management.TLSCertFile, pin)
	return nil
}

// writeCertificate generates the agent's self-signed certificate and key
// into certPath and keyPath (the key readable by its owner only) and
// returns the certificate's pin. Without force an existing certificate is
// kept and only its pin returned.
func writeCertificate(name, certPath, keyPath string, force bool) (string, error) {
	if !force {
		if b, err := os.ReadFile(certPath); err == nil {
			return certpin.OfPEM(b)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	certPEM, keyPEM, pin, err := mgmt.GenerateCertificate(name, time.Now())
	if err != nil {
		return "", err
	}
	for _, p := range []string{certPath, keyPath} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return "", err
		}
	}
	// The key first: a certificate without its key would be kept by the
	// next run without force.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return "", err
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return "", err
	}
	return pin, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
