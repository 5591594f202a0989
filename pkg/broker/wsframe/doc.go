// Package wsframe is the server side of the WebSocket protocol (RFC 6455)
// as the broker uses it: the opening handshake, reading client messages
// and writing server frames. It has no connection type and no goroutines:
// the broker's websocket transport owns the socket, decides who reads and
// who writes, and uses this package for the bytes.
//
// What it does:
//   - CheckUpgrade validates an upgrade request and AcceptKey computes the
//     Sec-WebSocket-Accept value. No subprotocol and no extension (such as
//     permessage-deflate) is ever negotiated.
//   - Reader reads frames from an io.Reader: it unmasks client frames,
//     joins fragments into one message, enforces a message size limit,
//     checks text messages are UTF-8, and returns control frames (ping,
//     pong, close) to its caller between data messages. A protocol
//     violation is returned as a *CloseError carrying the status code to
//     close the connection with.
//   - AppendFrame, PutHeader and CloseFrame build unmasked server frames.
//     Header space can be reserved in front of a payload that is built in
//     place (ReserveHeader), so that a frame is written with one syscall
//     and without copying its payload.
//
// Concurrency: a Reader is used by one goroutine at a time; the frame
// builders are pure functions.
package wsframe
