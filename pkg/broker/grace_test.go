package broker

import (
	"fmt"
	"testing"
	"time"
)

// TestPeerLossGrace: a session whose client goes quiet around a peer loss
// (its client may be backing off against the dead node) outlives
// MaxInterval without a connect, until MaxInterval + PeerLossGrace;
// without a loss it expires on time.
func TestPeerLossGrace(t *testing.T) {
	for _, tc := range []struct {
		name     string
		peerLost bool
	}{{"no peer lost", false}, {"peer lost", true}} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTestBroker(t, func(c *Config) {
				c.MaxInterval = 300 * time.Millisecond
				c.SweepInterval = 50 * time.Millisecond
				c.PeerLossGrace = 1500 * time.Millisecond
			})
			if tc.peerLost {
				tb.PeerLost(time.Now())
			}
			id := tb.handshake(t, nil)
			start := time.Now()
			eventually(t, 5*time.Second, func() error {
				if _, ok := tb.Session(id); ok {
					return fmt.Errorf("session alive after %v", time.Since(start))
				}
				return nil
			})
			lived := time.Since(start)
			if !tc.peerLost && lived > 1200*time.Millisecond {
				t.Fatalf("expired after %v, MaxInterval is 300ms", lived)
			}
			if tc.peerLost && lived < 1700*time.Millisecond {
				t.Fatalf("expired after %v, before MaxInterval + PeerLossGrace (1.8 s) from its last request", lived)
			}
		})
	}
}
