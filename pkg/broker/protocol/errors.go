package protocol

import (
	"strconv"
	"strings"
)

// Error is a Bayeux error: a three-digit code, arguments and a message,
// rendered as "NNN:arg1,arg2:message".
type Error struct {
	Code    int
	Args    []string
	Message string
}

func (e *Error) Error() string { return e.String() }

// String renders the NNN:args:message grammar.
func (e *Error) String() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(e.Code))
	b.WriteByte(':')
	for i, a := range e.Args {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(argEscaper.Replace(a))
	}
	b.WriteByte(':')
	b.WriteString(e.Message)
	return b.String()
}

// argEscaper keeps arguments from breaking the grammar: ':' and ',' (and
// '%' itself) are percent-encoded.
var argEscaper = strings.NewReplacer("%", "%25", ":", "%3A", ",", "%2C")

// NewError builds an Error.
func NewError(code int, message string, args ...string) *Error {
	return &Error{Code: code, Args: args, Message: message}
}

// Error codes used by the broker. The table is the contract with clients and
// operators: codes are never reused for another meaning.
const (
	CodeBadRequest        = 400 // malformed message, wrong field types, missing fields
	CodeNoClientID        = 401 // clientId missing where required
	CodeUnknownClient     = 402 // clientId unknown or expired: handshake again
	CodeDenied            = 403 // a security policy denied the operation
	CodeInvalidChannel    = 405 // channel name fails the grammar or the operation's rules
	CodeConnectionType    = 406 // no common or unknown connection type
	CodeVersion           = 407 // unsupported protocol version
	CodeLate              = 408 // a publish arrived after later messages of its client were processed (it sat in a frozen node or a closed connection): refused, not delivered out of order
	CodeQueueOverflow     = 409 // the session's queue overflowed: handshake again
	CodeMessagesLost      = 410 // messages on a subscribed channel were lost: handshake again
	CodeTooLarge          = 413 // message or request too large
	CodeTooMany           = 429 // too many messages, rate limited
	CodeServerUnavailable = 503 // backplane unavailable or node shutting down
)

// ParseError parses "NNN:args:message". It is used by tests and the Go client.
func ParseError(s string) (*Error, bool) {
	if len(s) < 5 || s[3] != ':' {
		return nil, false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '9' {
			return nil, false
		}
	}
	code, err := strconv.Atoi(s[:3])
	if err != nil {
		return nil, false
	}
	rest := s[4:]
	i := strings.IndexByte(rest, ':')
	if i < 0 {
		return nil, false
	}
	e := &Error{Code: code, Message: rest[i+1:]}
	if i > 0 {
		e.Args = strings.Split(rest[:i], ",")
	}
	return e, true
}
