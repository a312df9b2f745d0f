package certpin

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// metricsTokenInfo separates the metrics token from the vsock key and any
// other use of the management token.
const metricsTokenInfo = "ingot/metrics-token/v1"

// MetricsToken derives from the management token (surrounding whitespace
// trimmed) the bearer token of the metrics endpoint: 64 hex digits of
// HKDF-SHA256. The metrics endpoint serves plain HTTP, so its token can be
// read on the wire; a derived token opens only the metrics (the agent
// refuses it everywhere else), and it reveals nothing of the management
// token. The image holds only its SHA-256 (spec.Metrics.TokenSHA256).
func MetricsToken(token string) (string, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return "", fmt.Errorf("certpin: empty management token")
	}
	k, err := hkdf.Key(sha256.New, []byte(token), nil, metricsTokenInfo, 32)
	if err != nil {
		return "", fmt.Errorf("certpin: metrics token: %w", err)
	}
	return hex.EncodeToString(k), nil
}
