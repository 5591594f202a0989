package broker

import (
	"context"
	"time"
)

// maxThrottle bounds one pause of a throttled client.
const maxThrottle = time.Second

// throttleDelay is how long a transport stops reading from (or answering)
// a client whose request had n publishes refused by the publish rate limit:
// the time its bucket takes to earn them back, at most maxThrottle. A
// client publishing as fast as it can is so paced to about twice its rate,
// however it batches or pipelines, and the node's CPU stays with the other
// clients; a client within its rate never waits.
func (b *Broker) throttleDelay(n int) time.Duration {
	if n == 0 || b.cfg.PublishRate <= 0 {
		return 0
	}
	return min(time.Duration(float64(n)/b.cfg.PublishRate*float64(time.Second)), maxThrottle)
}

// throttle pauses for throttleDelay(n), or until ctx ends.
func (b *Broker) throttle(ctx context.Context, n int) {
	d := b.throttleDelay(n)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
