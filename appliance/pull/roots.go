package pull

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"sync"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// bundleTransport is the puller's default way to registries: a clone of
// http.DefaultTransport that trusts Mozilla's CA roots as the Go team
// ships them (x509roots/fallback/bundle), since the appliance carries no
// CA bundle of its own. It parses them on the first request: parsing at
// package init (as importing x509roots/fallback does) cost every start of
// ingot-init — stage0, stage1 and each container launcher — 60 ms under
// TCG, pulling or not.
type bundleTransport struct {
	once sync.Once
	rt   http.RoundTripper
	err  error
}

func (t *bundleTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.once.Do(func() {
		pool, err := bundleRoots()
		if err != nil {
			t.err = err
			return
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		t.rt = tr
	})
	if t.err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, t.err
	}
	return t.rt.RoundTrip(req)
}

// bundleRoots parses the CA roots of x509roots/fallback/bundle, with the
// constraints the bundle puts on some of them.
func bundleRoots() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for r := range bundle.Roots() {
		cert, err := x509.ParseCertificate(r.Certificate)
		if err != nil {
			return nil, fmt.Errorf("pull: CA root bundle: %w", err)
		}
		if r.Constraint == nil {
			pool.AddCert(cert)
		} else {
			pool.AddCertWithConstraint(cert, r.Constraint)
		}
	}
	return pool, nil
}
