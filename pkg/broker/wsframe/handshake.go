package wsframe

import (
	"crypto/sha1" //nolint:gosec // RFC 6455 mandates SHA-1 for the accept key
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
)

// acceptGUID is the fixed GUID of RFC 6455 section 1.3.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// HandshakeError is a rejected upgrade request: answer it with Status (and,
// for a wrong version, a Sec-WebSocket-Version: 13 header).
type HandshakeError struct {
	Status int
	Msg    string
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("websocket handshake: %d %s", e.Status, e.Msg)
}

// IsUpgrade reports whether r asks for a websocket (Connection: upgrade and
// Upgrade: websocket, as token lists, case-insensitive).
func IsUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

// CheckUpgrade validates a websocket opening handshake request (RFC 6455
// section 4.2.1) and returns the client's key, or why the request is
// refused: the error is always a *HandshakeError (typed, so that the
// caller reads its status without a type assertion). It does not check
// the Origin: that is the caller's policy.
func CheckUpgrade(r *http.Request) (key string, err *HandshakeError) {
	switch {
	case r.ProtoMajor != 1:
		return "", &HandshakeError{http.StatusHTTPVersionNotSupported, "websocket needs HTTP/1.1"}
	case r.Method != http.MethodGet:
		return "", &HandshakeError{http.StatusMethodNotAllowed, "websocket needs GET"}
	case !IsUpgrade(r):
		return "", &HandshakeError{http.StatusUpgradeRequired, "not a websocket upgrade"}
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return "", &HandshakeError{http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version (want 13)"}
	}
	key = strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 16 {
		return "", &HandshakeError{http.StatusBadRequest, "invalid Sec-WebSocket-Key"}
	}
	return key, nil
}

// AcceptKey is the Sec-WebSocket-Accept value for a client key.
func AcceptKey(key string) string {
	h := sha1.New() //nolint:gosec // see import
	h.Write([]byte(key))
	h.Write([]byte(acceptGUID))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// headerHasToken reports whether any value of the comma-separated header
// name contains token (case-insensitive).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
