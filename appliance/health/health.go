// Package health runs the health checks of services (spec.Health): one
// probe at a time, an HTTP GET or a TCP connect from init in the
// appliance's network, and the state of a check as its probes come in.
package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/ingotdev/ingot/packer/format/spec"
)

// maxBodyBytes is how much of an answer a probe reads before it closes the
// connection; the status line decides.
const maxBodyBytes = 64 << 10

// Probe runs one probe of h, bounded by h's timeout, and returns why it
// failed, or nil.
func Probe(ctx context.Context, h spec.Health) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout())
	defer cancel()
	if h.HTTP != "" {
		return probeHTTP(ctx, h.HTTP)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", h.TCP)
	if err != nil {
		return fmt.Errorf("connect %s: %w", h.TCP, timeoutError(ctx, err))
	}
	return c.Close()
}

func probeHTTP(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	req.Header.Set("User-Agent", "ingot-health/1")
	client := &http.Client{
		// No proxy from the environment, no connection kept between
		// probes, and a redirect is an answer, not something to follow.
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, timeoutError(ctx, err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyBytes))
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("GET %s: HTTP %s", url, resp.Status)
	}
	return nil
}

// timeoutError names the timeout when ctx's deadline ended the probe.
func timeoutError(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer within the timeout: %w", err)
	}
	return err
}

// State is where a check stands.
type State string

// States of a check.
const (
	// Starting: no probe has succeeded yet, and fewer than Retries have
	// failed in a row.
	Starting State = "starting"
	Healthy  State = "healthy"
	// Unhealthy: Retries probes in a row failed.
	Unhealthy State = "unhealthy"
)

// Status is a check's state after the probes so far.
type Status struct {
	State State
	// Failures counts the probes that failed in a row, up to now.
	Failures int
	// Passes counts the probes that passed in a row, up to now.
	Passes int
	// LastError is the last failed probe's error, kept until a probe
	// succeeds.
	LastError string
	// LastProbe is when the last probe ended.
	LastProbe time.Time
}

// Observe records one probe's result ending at t and returns the new
// status and whether its state changed.
func (s Status) Observe(err error, t time.Time, retries int) (Status, bool) {
	before := s.State
	s.LastProbe = t
	if err == nil {
		s.State, s.Failures, s.LastError = Healthy, 0, ""
		s.Passes++
	} else {
		s.Failures++
		s.Passes = 0
		s.LastError = err.Error()
		if s.Failures >= retries {
			s.State = Unhealthy
		}
	}
	if s.State == "" {
		s.State = Starting
	}
	return s, s.State != before
}

// Run probes h every interval until ctx ends, the first time after
// first, and sends each result on results (a probe result, nil for
// success); it returns when ctx ends.
func Run(ctx context.Context, h spec.Health, first time.Duration, results chan<- error) {
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := Probe(ctx, h)
		if ctx.Err() != nil {
			return
		}
		select {
		case results <- err:
		case <-ctx.Done():
			return
		}
		t.Reset(h.Interval())
	}
}
