package protocol

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// AppendPublication appends the wire form of a broadcast message,
// {"channel":...,"data":...[,"id":...][,"ext":...]}, to dst. data must be
// valid JSON; ext, if not nil, must be a JSON object. This is the
// encode-once path: the result is shared by every subscriber.
func AppendPublication(dst []byte, channel string, data, id, ext json.RawMessage) []byte {
	dst = append(dst, `{"channel":`...)
	dst = AppendString(dst, channel)
	if len(data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	} else {
		dst = append(dst, `,"data":null`...)
	}
	if len(id) > 0 {
		dst = append(dst, `,"id":`...)
		dst = append(dst, id...)
	}
	if len(ext) > 0 {
		dst = append(dst, `,"ext":`...)
		dst = append(dst, ext...)
	}
	return append(dst, '}')
}

// AppendReply appends the JSON form of r to dst.
func AppendReply(dst []byte, r *Reply) []byte {
	if out, ok := appendReplyFast(dst, r); ok {
		return out
	}
	b, err := json.Marshal(r)
	if err != nil {
		// Only Ext values supplied by extensions can fail; drop them rather
		// than lose the reply.
		r2 := *r
		r2.Ext = nil
		b, _ = json.Marshal(&r2)
	}
	return append(dst, b...)
}

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string. U+2028 and U+2029 are escaped so
// the output is also safe inside JavaScript (JSONP).
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\u202`...)
			dst = append(dst, hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// AppendInt appends a decimal integer.
func AppendInt(dst []byte, v int64) []byte { return strconv.AppendInt(dst, v, 10) }
