package pull

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ingotdev/ingot/mgmt"
)

// credentials are the registry credentials kept in authFile, by registry.
type credentials map[string]authn.Basic

// SetRegistryAuth stores (or, with an empty user and password, removes)
// the credentials of one registry in the state directory, readable by
// root only. Pulls use them for basic authentication and for the
// registry's token flow.
func (p *Puller) SetRegistryAuth(ctx context.Context, a mgmt.RegistryAuth) error {
	if p.cfg.StateDir == "" {
		return fmt.Errorf("pull: registry credentials: no perm partition to keep them on: %w", mgmt.ErrConflict)
	}
	if err := a.Validate(); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	if reg, err := name.NewRegistry(a.Registry, name.StrictValidation); err != nil || a.Registry != reg.RegistryStr() {
		return fmt.Errorf("pull: registry %q: want a host[:port]: %w", a.Registry, mgmt.ErrInvalid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	creds, err := p.loadCredentials()
	if err != nil {
		return err
	}
	if a.Remove() {
		delete(creds, a.Registry)
	} else {
		creds[a.Registry] = authn.Basic{Username: a.Username, Password: a.Password}
	}
	if err := writeJSON(p.cfg.StateDir, authFile, creds, 0o600); err != nil {
		return err
	}
	p.cfg.Logf("pull: credentials of registry %s %s", a.Registry, map[bool]string{true: "removed", false: "stored"}[a.Remove()])
	return nil
}

func (p *Puller) loadCredentials() (credentials, error) {
	creds := credentials{}
	if p.cfg.StateDir == "" {
		return creds, nil
	}
	if err := readJSON(filepath.Join(p.cfg.StateDir, authFile), &creds); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return creds, nil
}

// keychain resolves a registry's credentials from authFile; a registry
// without an entry is reached anonymously.
type keychain struct{ p *Puller }

func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	k.p.mu.Lock()
	creds, err := k.p.loadCredentials()
	k.p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if c, ok := creds[r.RegistryStr()]; ok {
		return authn.FromConfig(authn.AuthConfig{Username: c.Username, Password: c.Password}), nil
	}
	return authn.Anonymous, nil
}
