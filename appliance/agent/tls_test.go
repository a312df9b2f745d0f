package agent_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"

	"github.com/ingotdev/ingot/appliance/agent"
)

func TestListenTokenTLSRefusesOtherKeys(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		pem  []byte
		want string
	}{
		{"empty", nil, "no PRIVATE KEY"},
		{"certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), "no PRIVATE KEY"},
		{"junk", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), "vsock key"},
		{"ECDSA", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), "want Ed25519"},
	} {
		if _, err := agent.ListenTokenTLS(l, tc.pem); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ListenTokenTLS(%s) = %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
