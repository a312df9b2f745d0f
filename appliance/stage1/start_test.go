package stage1

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
)

// TestSetupBeforeServices checks the order issue 12's attack 1 relies on:
// every Setup (where the agent binds its vsock port) has returned before
// the first service starts, so no service can take the port first; the
// extensions themselves run after the services started, and a failed
// Setup does not hold the others back.
func TestSetupBeforeServices(t *testing.T) {
	s := newTestSystem()
	var mu sync.Mutex
	var order []string
	note := func(what string) {
		mu.Lock()
		order = append(order, what)
		mu.Unlock()
	}
	ran := make(chan struct{})
	setups := []namedSetup{
		{"agent", func(*System) (Extension, error) {
			note("agent bound")
			return func(ctx context.Context, _ *System) error {
				note("agent serves")
				close(ran)
				<-ctx.Done()
				return ctx.Err()
			}, nil
		}},
		{"broken", func(*System) (Extension, error) { return nil, errors.New("no key") }},
	}
	ctx, cancel := context.WithCancel(context.Background())
	supDone, extDone := s.start(ctx, setups, func(context.Context) <-chan struct{} {
		note("services started")
		done := make(chan struct{})
		close(done)
		return done
	})
	<-supDone
	<-ran
	cancel()
	<-extDone
	want := []string{"agent bound", "services started", "agent serves"}
	if !slices.Equal(order, want) {
		t.Errorf("order = %q, want %q", order, want)
	}
	if w := s.Status().Warnings; !slices.Contains(w, "broken: no key") {
		t.Errorf("warnings = %q, want the failed setup named", w)
	}
}
