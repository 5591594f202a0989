// Package wsconformance is a websocket conformance suite for the node,
// modelled on the case sections of the Autobahn TestSuite (fuzzing client
// mode): 1 framing, 2 pings and pongs, 3 reserved bits, 4 opcodes,
// 5 fragmentation, 6 UTF-8 handling (also across fragments), 7 close
// handling, 9 limits, 12 and 13 permessage-deflate. It is a test-only
// package: `go test ./e2e/wsconformance` starts the real node binary on a
// loopback port and drives it with a raw-socket client written here
// (frames built byte by byte, masked, optionally chopped into small TCP
// writes or paced), so that every byte on the wire is the case's.
//
// Autobahn's cases expect an echo server. The node is a Bayeux server: a
// message must be a JSON array of Bayeux messages, so the suite maps each
// case as follows (cases_test.go has the details):
//
//   - "Echo of text T" becomes: send the Bayeux message
//     [{"channel":"/meta/connect","clientId":"conformance","connectionType":"websocket","id":"T"}]
//     (T unescaped when it is UTF-8 without quote, backslash or control
//     characters, so that the case's bytes, invalid ones included, are on
//     the wire), framed and fragmented as the case says, and expect the
//     reply to that message: a text frame holding a JSON array whose
//     message has id T (the unknown client is refused with 402, which
//     needs no session and echoes the id).
//   - A case that sends an empty or otherwise non-JSON text message expects
//     close 1007 (the broker cannot decode it), where Autobahn expects an
//     echo.
//   - Binary messages (sections 1.2, 9.2, 9.4...) expect close 1003: the
//     broker refuses binary data.
//   - Failing cases expect the close code the RFC names (1002 protocol
//     error, 1007 invalid UTF-8, 1009 too big) followed by the end of the
//     TCP stream; passing ones end with a close handshake (1000 echoed).
//   - Pings are answered with a pong of the same payload; of several pings
//     sent back to back only the latest is guaranteed a pong (RFC 6455
//     section 5.5.3), so the suite checks the pongs received are in order
//     and the last ping's is among them.
//   - Section 9 uses the node's default limit (--max-request-bytes, 1 MiB):
//     messages up to it are answered, one byte over it is closed with 1009
//     (also when compressed: the limit is on the inflated size).
//   - Sections 12 and 13 offer permessage-deflate in the handshake, check
//     the answer (always server_no_context_takeover and
//     client_no_context_takeover, or nothing for an offer the node
//     declines), send compressed messages and inflate each reply on its
//     own (no context is carried between messages).
package wsconformance
