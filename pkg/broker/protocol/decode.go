package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Limits bound what one request may carry.
type Limits struct {
	MaxMessages     int // messages in one request; more is a request error
	MaxMessageBytes int // encoded size of one message; larger is a per-message error
	MaxDepth        int // JSON nesting depth of a request (the array counts); deeper is a request error
}

// DefaultLimits are the limits used when a field is zero.
var defaultLimits = Limits{MaxMessages: 256, MaxMessageBytes: 256 << 10, MaxDepth: 32}

func (l Limits) withDefaults() Limits {
	if l.MaxMessages <= 0 {
		l.MaxMessages = defaultLimits.MaxMessages
	}
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = defaultLimits.MaxMessageBytes
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = defaultLimits.MaxDepth
	}
	return l
}

// RequestError is a problem with a request as a whole (not JSON, not a
// message or array, too many messages). The transport answers it with an HTTP
// 4xx (or a WebSocket error frame) carrying the Bayeux error.
type RequestError struct{ Err *Error }

func (e *RequestError) Error() string { return e.Err.String() }

// Decode decodes a request body: a JSON array of messages or a single message
// object. A request-level problem returns a *RequestError; a problem confined
// to one message is recorded in that message's Invalid field.
func Decode(body []byte, lim Limits) ([]*Message, error) {
	return DecodeAppend(nil, body, lim)
}

// DecodeAppend is Decode appending to dst, for transports that receive a
// request in several parts (repeated form "message" parameters).
func DecodeAppend(dst []*Message, body []byte, lim Limits) ([]*Message, error) {
	lim = lim.withDefaults()
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return dst, &RequestError{NewError(CodeBadRequest, "Empty request")}
	}
	if nestingExceeds(body, lim.MaxDepth) {
		return dst, &RequestError{NewError(CodeBadRequest, "JSON nested too deeply", strconv.Itoa(lim.MaxDepth))}
	}
	switch body[0] {
	case '{':
		if len(dst)+1 > lim.MaxMessages {
			return dst, &RequestError{NewError(CodeTooMany, "Too many messages in one request", strconv.Itoa(lim.MaxMessages))}
		}
		if !json.Valid(body) {
			return dst, &RequestError{NewError(CodeBadRequest, "Malformed JSON")}
		}
		return append(dst, decodeOne(body, lim)), nil
	case '[':
		if !json.Valid(body) {
			return dst, &RequestError{NewError(CodeBadRequest, "Malformed JSON")}
		}
		var buf [16][]byte
		raws, ok := splitArray(body, buf[:0])
		if !ok {
			return dst, &RequestError{NewError(CodeBadRequest, "Malformed JSON")}
		}
		if len(raws) == 0 {
			// Answered with an empty array: sfdx-faye sends [] on its
			// websocket as a keep-alive, as Faye's server allows.
			return dst, nil
		}
		if len(dst)+len(raws) > lim.MaxMessages {
			return dst, &RequestError{NewError(CodeTooMany, "Too many messages in one request", strconv.Itoa(lim.MaxMessages))}
		}
		for _, raw := range raws {
			dst = append(dst, decodeOne(raw, lim))
		}
		return dst, nil
	default:
		if !json.Valid(body) {
			return dst, &RequestError{NewError(CodeBadRequest, "Malformed JSON")}
		}
		return dst, &RequestError{NewError(CodeBadRequest, "Request must be a message object or an array of messages")}
	}
}

// nestingExceeds reports whether the JSON text nests arrays and objects
// deeper than max, skipping string contents. It stops at the first excess,
// so a hostile body costs at most one pass.
func nestingExceeds(b []byte, max int) bool {
	depth := 0
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			if depth > max {
				return true
			}
		case ']', '}':
			depth--
		}
	}
	return false
}

// decodeOne decodes one raw element; problems go into Message.Invalid.
func decodeOne(raw []byte, lim Limits) *Message {
	m := &Message{}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		m.Invalid = NewError(CodeBadRequest, "Message must be a JSON object")
		return m
	}
	if len(raw) > lim.MaxMessageBytes {
		recoverHead(m, raw)
		m.Invalid = NewError(CodeTooLarge, "Message too large", strconv.Itoa(lim.MaxMessageBytes))
		return m
	}
	if !utf8.Valid(raw) {
		// Refused here, so it is never published: a websocket subscriber
		// must close its connection on a text frame that is not UTF-8.
		recoverHead(m, raw)
		m.Invalid = NewError(CodeBadRequest, "Message is not valid UTF-8")
		return m
	}
	if !decodeFast(raw, m) {
		*m = Message{}
		if _, inexact := topLevelKeys(raw); inexact {
			raw = exactOnly(raw)
		}
		if err := json.Unmarshal(raw, m); err != nil {
			// A failing field may stop decoding before channel or id were
			// read: recover them on their own so the reply can echo them.
			*m = Message{}
			recoverHead(m, raw)
			m.Invalid = NewError(CodeBadRequest, describe(err))
			return m
		}
	}
	if id := validID(m.ID); id == nil && m.ID != nil {
		m.ID = nil
		m.Invalid = NewError(CodeBadRequest, "Field id must be a string or a number")
		return m
	}
	if m.Channel == "" {
		m.Invalid = NewError(CodeBadRequest, "Missing channel")
		return m
	}
	if len(m.Ext) > 0 && (m.Ext[0] != '{' && !bytes.Equal(m.Ext, []byte("null"))) {
		m.Invalid = NewError(CodeBadRequest, "Field ext must be an object")
		return m
	}
	return m
}

// recoverHead fills channel and id from raw, ignoring every other field
// and any type errors, for the reply to a message that failed to decode.
func recoverHead(m *Message, raw []byte) {
	var head struct {
		Channel json.RawMessage `json:"channel"`
		ID      json.RawMessage `json:"id"`
	}
	bits, inexact := topLevelKeys(raw)
	if inexact {
		raw = exactOnly(raw)
	}
	_ = json.Unmarshal(raw, &head)
	var ch string
	if bits&fChannel != 0 && json.Unmarshal(head.Channel, &ch) == nil {
		m.Channel = ch
	}
	if bits&fID != 0 {
		m.ID = validID(head.ID)
	}
}

// validID keeps an id only if it is a JSON string or number: it is echoed
// verbatim into replies, so it must not smuggle structure.
func validID(id json.RawMessage) json.RawMessage {
	if len(id) == 0 {
		return nil
	}
	switch c := id[0]; {
	case c == '"', c == '-', c >= '0' && c <= '9':
		return id
	}
	return nil
}

func describe(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "message"
		}
		return fmt.Sprintf("Field %s has the wrong type (%s)", field, te.Value)
	}
	return "Malformed message"
}
