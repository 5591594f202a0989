// Package netpoll is the broker's socket machinery, free of Bayeux: it lets
// a server keep many idle connections without a goroutine or net/http
// buffers each.
//
//   - Poller: one shared epoll set (Linux) in which an idle socket waits
//     for its next bytes; its owner's Readable runs on a new goroutine when
//     they come. Elsewhere nothing parks (Available is false).
//   - Conn and Hijack: a connection taken out of net/http, whose reads
//     borrow a pooled buffer only while bytes wait and whose writes go
//     straight to the socket.
//   - Reservers: hands a hijacked connection back to a copy of the
//     http.Server it came from, for its next request.
//   - WriteNonBlocking: one write(2) that never waits.
//
// Contracts:
//   - Concurrency: Poller and Reservers are safe for concurrent use. A Conn
//     has one reader and one writer at a time (the two sides share nothing).
//   - Ownership: a parked socket belongs to its owner; the Poller only calls
//     Readable once per Park, or forgets it on Cancel.
//   - Bounds: the poller's goroutine and epoll instance exist only while
//     something is parked; a Reserver's Serve loop ends 100 ms after the
//     last connection was handed in.
package netpoll

// Readable is what a parked socket's owner implements: Readable is called
// on a new goroutine once the socket has bytes, EOF or an error.
type Readable interface{ Readable() }
