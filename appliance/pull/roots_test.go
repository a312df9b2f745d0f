package pull

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestBundleTransport: the default transport parses Mozilla's roots on
// its first request only, and refuses a server whose CA is not among them.
func TestBundleTransport(t *testing.T) {
	pool, err := bundleRoots()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(pool.Subjects()); n < 100 { //nolint:staticcheck // a pool built here, not the system's
		t.Errorf("bundle has %d roots, want Mozilla's (over 100)", n)
	}
	tr := &bundleTransport{}
	if tr.rt != nil {
		t.Fatal("roots parsed before the first request")
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	_, err = tr.RoundTrip(req)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("RoundTrip to a server with a private CA = %v, want a certificate error", err)
	}
	if h, ok := tr.rt.(*http.Transport); !ok || h.TLSClientConfig == nil || h.TLSClientConfig.RootCAs == nil {
		t.Errorf("transport after the first request = %#v, want one with the bundle's roots", tr.rt)
	}
}
