// Package wsframe is the server side of the WebSocket protocol (RFC 6455)
// as the broker uses it: the opening handshake, reading client messages
// and writing server frames. It has no connection type and no goroutines:
// the broker's websocket transport owns the socket, decides who reads and
// who writes, and uses this package for the bytes.
//
// What it does:
//   - CheckUpgrade validates an upgrade request and AcceptKey computes the
//     Sec-WebSocket-Accept value. No subprotocol is negotiated; the only
//     extension is permessage-deflate (RFC 7692, NegotiateDeflate), always
//     without context takeover in either direction.
//   - Reader reads frames from an io.Reader: it unmasks client frames,
//     joins fragments into one message, decompresses a compressed one
//     (SetDeflate), enforces a message size limit (on the decompressed
//     size), checks text messages are UTF-8, refuses binary messages
//     (1003), and returns control frames (ping, pong, close) to its caller
//     between data messages. A protocol violation is returned as a
//     *CloseError carrying the status code to close the connection with.
//   - Deflate holds the pooled flate compressors and decompressors of
//     every connection that negotiated permessage-deflate (none is kept
//     per connection between messages). A compressed message (Message) is
//     built from segments, each a deflate stream of its own: content many
//     connections send (a publication) is compressed once and its segment
//     reused from a bounded cache (Shared); the rest is compressed per
//     message (Own).
//   - AppendFrame, PutHeader and CloseFrame build unmasked server frames.
//     Header space can be reserved in front of a payload that is built in
//     place (ReserveHeader), so that a frame is written with one syscall
//     and without copying its payload.
//
// Concurrency: a Reader is used by one goroutine at a time; the frame
// builders are pure functions; a Deflate is safe for concurrent use.
package wsframe
