package protocol

import (
	"encoding/json"
	"unicode/utf8"
)

// The fast paths below cover the messages every client sends all the time
// (connect, publish, ack replies) in one pass without reflection. Anything
// unusual (escapes, null, a repeated or case-folded key, a wrong type)
// returns false and takes the encoding/json path, so that both paths give
// the same result.

// splitArray returns the elements of a JSON array that is known to be
// valid, as sub-slices of b, or false if b is not an array.
func splitArray(b []byte, dst [][]byte) ([][]byte, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return dst, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return dst, true
	}
	for i < len(b) {
		end, ok := valueEnd(b, i)
		if !ok {
			return dst, false
		}
		dst = append(dst, b[i:end])
		i = skipSpace(b, end)
		if i >= len(b) {
			return dst, false
		}
		if b[i] == ']' {
			return dst, true
		}
		if b[i] != ',' {
			return dst, false
		}
		i = skipSpace(b, i+1)
	}
	return dst, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// valueEnd returns the index after the (valid) JSON value at b[i].
func valueEnd(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, ok := stringEnd(b, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default:
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\n', '\r', '\t':
				return j, j > i
			}
			j++
		}
		return j, j > i
	}
}

// stringEnd returns the index after the string starting at b[i] ('"').
func stringEnd(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

// plainString returns the contents of a JSON string value that needs no
// unescaping (no backslash, valid UTF-8): exactly what encoding/json would
// decode.
func plainString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	s := v[1 : len(v)-1]
	ascii := true
	for _, c := range s {
		if c == '\\' {
			return "", false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(s) {
		return "", false
	}
	return string(s), true
}

// decodeFast decodes the valid JSON object raw into m (which must be
// zero). It reports false, leaving m partly filled, when raw needs the
// encoding/json path.
func decodeFast(raw []byte, m *Message) bool {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return true
	}
	var seen uint16
	for {
		if i >= len(raw) || raw[i] != '"' {
			return false
		}
		kEnd, ok := stringEnd(raw, i)
		if !ok {
			return false
		}
		key := raw[i+1 : kEnd-1]
		i = skipSpace(raw, kEnd)
		if i >= len(raw) || raw[i] != ':' {
			return false
		}
		i = skipSpace(raw, i+1)
		vEnd, ok := valueEnd(raw, i)
		if !ok {
			return false
		}
		v := raw[i:vEnd]
		if v[0] == 'n' { // null: encoding/json keeps some fields, drops others
			return false
		}
		bit, known := fieldBits[string(key)]
		if known {
			if seen&bit != 0 {
				return false // a repeated key: let encoding/json decide
			}
			seen |= bit
			if !decodeField(m, bit, v) {
				return false
			}
		} else {
			for _, c := range key {
				if c == '\\' {
					return false
				}
			}
			if foldsToField(key) {
				return false
			}
		}
		i = skipSpace(raw, vEnd)
		if i >= len(raw) {
			return false
		}
		if raw[i] == '}' {
			return skipSpace(raw, i+1) == len(raw)
		}
		if raw[i] != ',' {
			return false
		}
		i = skipSpace(raw, i+1)
	}
}

func decodeField(m *Message, bit uint16, v []byte) bool {
	var ok bool
	switch bit {
	case fChannel:
		m.Channel, ok = plainString(v)
	case fClientID:
		m.ClientID, ok = plainString(v)
	case fVersion:
		m.Version, ok = plainString(v)
	case fMinimumVersion:
		m.MinimumVersion, ok = plainString(v)
	case fConnectionType:
		m.ConnectionType, ok = plainString(v)
	case fID:
		m.ID, ok = json.RawMessage(v), true
	case fData:
		m.Data, ok = json.RawMessage(v), true
	case fExt:
		m.Ext, ok = json.RawMessage(v), true
	case fAdvice:
		if v[0] != '{' {
			return false
		}
		var a Advice
		if json.Unmarshal(v, &a) != nil {
			return false
		}
		m.Advice, ok = &a, true
	case fSupported:
		ok = json.Unmarshal(v, &m.SupportedConnectionTypes) == nil
	case fSubscription:
		ok = m.Subscription.UnmarshalJSON(v) == nil
	}
	return ok
}

// appendReplyFast encodes the common replies (no ext, data, subscription
// or supportedConnectionTypes; an id that needs no escaping) without
// reflection, byte for byte as encoding/json would up to the escaping of
// \b and \f (both are valid JSON). It reports false when r is not one of
// those.
func appendReplyFast(dst []byte, r *Reply) ([]byte, bool) {
	if r.Ext != nil || len(r.Data) > 0 || r.Subscription != nil || r.SupportedConnectionTypes != nil || !plainID(r.ID) {
		return dst, false
	}
	if a := r.Advice; a != nil && len(a.Hosts) > 0 {
		return dst, false
	}
	dst = append(dst, `{"channel":`...)
	dst = AppendString(dst, r.Channel)
	if len(r.ID) > 0 {
		dst = append(dst, `,"id":`...)
		dst = append(dst, r.ID...)
	}
	if r.ClientID != "" {
		dst = append(dst, `,"clientId":`...)
		dst = AppendString(dst, r.ClientID)
	}
	if r.Successful != nil {
		if *r.Successful {
			dst = append(dst, `,"successful":true`...)
		} else {
			dst = append(dst, `,"successful":false`...)
		}
	}
	if r.Error != "" {
		dst = append(dst, `,"error":`...)
		dst = AppendString(dst, r.Error)
	}
	if r.Version != "" {
		dst = append(dst, `,"version":`...)
		dst = AppendString(dst, r.Version)
	}
	if a := r.Advice; a != nil {
		dst = append(dst, `,"advice":{`...)
		n := len(dst)
		field := func(name string) {
			if len(dst) > n {
				dst = append(dst, ',')
			}
			dst = append(dst, name...)
		}
		if a.Reconnect != "" {
			field(`"reconnect":`)
			dst = AppendString(dst, a.Reconnect)
		}
		for _, f := range []struct {
			name string
			v    *int64
		}{{`"interval":`, a.Interval}, {`"timeout":`, a.Timeout}, {`"maxInterval":`, a.MaxInterval}} {
			if f.v != nil {
				field(f.name)
				dst = AppendInt(dst, *f.v)
			}
		}
		if a.MultipleClients {
			field(`"multiple-clients":true`)
		}
		dst = append(dst, '}')
	}
	return append(dst, '}'), true
}

// plainID reports whether id (absent, or a string or number from a
// decoded message) can be copied into a reply as is: printable ASCII
// without escapes or the characters encoding/json escapes for HTML.
func plainID(id []byte) bool {
	if len(id) == 0 {
		return true
	}
	str := id[0] == '"'
	if str && (len(id) < 2 || id[len(id)-1] != '"') {
		return false
	}
	for k, c := range id {
		switch {
		case c == '"' && str && (k == 0 || k == len(id)-1):
		case c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&':
			return false
		case !str && !(c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'):
			return false
		}
	}
	return true
}
