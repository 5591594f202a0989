package broker

import "sync"

// limits counts what clients hold, per key, against the configured
// maxima. Each count is taken with acquire, which returns the lease that
// gives it back: nobody pairs increments and decrements by hand.
type limits struct {
	ipSessions      keyCounter // client address -> live sessions (MaxSessionsPerIP)
	ipHeld          keyCounter // client address -> held HTTP connects (MaxHeldPerIP)
	browserSessions keyCounter // browser id -> live sessions (MaxSessionsPerBrowser)
	browserHeld     keyCounter // browser id -> held HTTP connects (one: multiple-clients advice)
}

// keyCounter counts holders per key. The zero value is ready to use.
type keyCounter struct {
	mu sync.Mutex
	n  map[string]int
}

// lease is one count held on a keyCounter; the zero lease holds nothing.
// Its owner releases it once (release is idempotent for that owner; it is
// not safe for concurrent use).
type lease struct {
	c   *keyCounter
	key string
}

// acquire counts one holder of key, unless limit > 0 and key already has
// limit holders (ok false). An empty key counts nothing and always
// succeeds.
func (c *keyCounter) acquire(key string, limit int) (l lease, ok bool) {
	if key == "" {
		return lease{}, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if limit > 0 && c.n[key] >= limit {
		return lease{}, false
	}
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[key]++
	return lease{c: c, key: key}, true
}

// count returns the holders of key.
func (c *keyCounter) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// release gives the count back (once).
func (l *lease) release() {
	c := l.c
	if c == nil {
		return
	}
	l.c = nil
	c.mu.Lock()
	if c.n[l.key]--; c.n[l.key] <= 0 {
		delete(c.n, l.key)
	}
	c.mu.Unlock()
}
