package vmtest

import "testing"

// TestFreeTCPPortBelowEphemeral: the ports handed out lie below the
// kernel's ephemeral range, where no outgoing connection takes them, and
// are free.
func TestFreeTCPPortBelowEphemeral(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		p, err := FreeTCPPort()
		if err != nil || p < freePortFloor || p >= low {
			t.Fatalf("FreeTCPPort() = %d, %v; want a port in [%d, %d)", p, err, freePortFloor, low)
		}
	}
}
