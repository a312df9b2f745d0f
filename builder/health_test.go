package builder

import (
	"fmt"
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// TestHealthRuleIsTheAppliances: ingot.yaml's health checks are checked
// by the appliance's rule, so config accepts exactly the checks that
// appliance.json accepts, at each bound; and the builder passes every
// field through to appliance.json.
func TestHealthRuleIsTheAppliances(t *testing.T) {
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	for _, h := range []spec.Health{
		{IntervalMillis: ms(spec.MinHealthInterval), TimeoutMillis: ms(spec.MinHealthTimeout)},
		{IntervalMillis: ms(spec.MinHealthInterval) - 1},
		{IntervalMillis: ms(spec.MaxHealthInterval), TimeoutMillis: ms(spec.MaxHealthInterval)},
		{IntervalMillis: ms(spec.MaxHealthInterval) + 1},
		{TimeoutMillis: ms(spec.MinHealthTimeout) - 1},
		{TimeoutMillis: ms(spec.DefaultHealthInterval)},
		{TimeoutMillis: ms(spec.DefaultHealthInterval) + 1},
		{Retries: spec.MaxHealthRetries},
		{Retries: spec.MaxHealthRetries + 1},
	} {
		h.TCP = "127.0.0.1:5432"
		y := fmt.Sprintf("{tcp: %q", h.TCP)
		if h.IntervalMillis != 0 {
			y += fmt.Sprintf(", interval: %dms", h.IntervalMillis)
		}
		if h.TimeoutMillis != 0 {
			y += fmt.Sprintf(", timeout: %dms", h.TimeoutMillis)
		}
		if h.Retries != 0 {
			y += fmt.Sprintf(", retries: %d", h.Retries)
		}
		y += "}"
		_, err := config.Parse("ingot.yaml", []byte("name: a\nservices:\n  - {name: a, go: ./a, health: "+y+"}\n"))
		if want := h.Validate(); (err == nil) != (want == nil) {
			t.Errorf("health %s: config.Parse = %v, spec Validate = %v", y, err, want)
		}
	}

	cfg := testConfig(t, `  - name: db
    go: ./cmd/hello
    health: {tcp: "127.0.0.1:5432", interval: 7s, timeout: 1500ms, retries: 4, restart: true}
  - name: plain
    go: ./cmd/hello`)
	b := &build{cfg: cfg, target: config.TargetVMAmd64}
	got := b.service(cfg.Services[0]).Health
	want := spec.Health{TCP: "127.0.0.1:5432", IntervalMillis: 7000, TimeoutMillis: 1500, Retries: 4, Restart: true}
	if got == nil || *got != want {
		t.Errorf("service(db).Health = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("converted check does not validate: %v", err)
	}
	if h := b.service(cfg.Services[1]).Health; h != nil {
		t.Errorf("service(plain).Health = %+v, want none", h)
	}
}
