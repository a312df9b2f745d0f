package builder

import (
	"testing"
	"time"

	"github.com/ingotdev/ingot/builder/config"
	"github.com/ingotdev/ingot/packer/format/spec"
)

// TestHealthMatchesSpec: the config package checks health checks with its
// own copy of the appliance's defaults and bounds (it imports nothing of
// ingot); they must agree, and the conversion must keep every field.
func TestHealthMatchesSpec(t *testing.T) {
	for _, c := range []struct {
		name         string
		config, spec time.Duration
	}{
		{"default interval", config.DefaultHealthInterval, spec.DefaultHealthInterval},
		{"default timeout", config.DefaultHealthTimeout, spec.DefaultHealthTimeout},
		{"min interval", config.MinHealthInterval, spec.MinHealthInterval},
		{"max interval", config.MaxHealthInterval, spec.MaxHealthInterval},
		{"min timeout", config.MinHealthTimeout, spec.MinHealthTimeout},
	} {
		if c.config != c.spec {
			t.Errorf("%s: config %v, spec %v", c.name, c.config, c.spec)
		}
	}
	if config.DefaultHealthRetries != spec.DefaultHealthRetries || config.MaxHealthRetries != spec.MaxHealthRetries {
		t.Errorf("retries: config default %d max %d, spec %d %d", config.DefaultHealthRetries, config.MaxHealthRetries, spec.DefaultHealthRetries, spec.MaxHealthRetries)
	}
	got := specHealth(&config.Health{TCP: "127.0.0.1:5432", Interval: 7 * time.Second, Timeout: 1500 * time.Millisecond, Retries: 4, Restart: true})
	want := spec.Health{TCP: "127.0.0.1:5432", IntervalMillis: 7000, TimeoutMillis: 1500, Retries: 4, Restart: true}
	if got == nil || *got != want {
		t.Errorf("specHealth = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("converted check does not validate: %v", err)
	}
	if specHealth(nil) != nil {
		t.Error("specHealth(nil) != nil")
	}
}
