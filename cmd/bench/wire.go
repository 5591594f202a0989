package main

import (
	"encoding/json"
	"errors"
	"strconv"
)

// wireMsg is one Bayeux message of a response, as sub-slices of the
// response bytes (valid only during the scan callback): no allocation, no
// decoding of the fields the tool does not need.
type wireMsg struct {
	Channel    []byte // string contents (escapes left as they are)
	ID         []byte // raw value: "..." or a number
	ClientID   []byte // string contents
	Successful int8   // -1 absent, 0 false, 1 true
	Data       []byte // raw value
	Ext        []byte // raw value
	Advice     []byte // raw value
	Error      []byte // string contents
}

var errBadJSON = errors.New("malformed JSON in response")

// scanMessages calls fn for each message object of a Bayeux response (an
// array of objects, or one object). It is one pass over the bytes: it
// finds the top-level keys of each object and the extent of their values,
// and skips everything else.
func scanMessages(b []byte, fn func(*wireMsg)) error {
	i := skipWS(b, 0)
	if i >= len(b) {
		return errBadJSON
	}
	if b[i] == '{' {
		end, err := scanObject(b, i, fn)
		if err != nil {
			return err
		}
		if skipWS(b, end) != len(b) {
			return errBadJSON
		}
		return nil
	}
	if b[i] != '[' {
		return errBadJSON
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '{' {
			return errBadJSON
		}
		end, err := scanObject(b, i, fn)
		if err != nil {
			return err
		}
		i = skipWS(b, end)
		if i >= len(b) {
			return errBadJSON
		}
		if b[i] == ']' {
			if skipWS(b, i+1) != len(b) {
				return errBadJSON
			}
			return nil
		}
		if b[i] != ',' {
			return errBadJSON
		}
		i = skipWS(b, i+1)
	}
}

// scanObject reads the object at b[i] (which is '{') and returns the index
// after it.
func scanObject(b []byte, i int, fn func(*wireMsg)) (int, error) {
	m := wireMsg{Successful: -1}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		fn(&m)
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, errBadJSON
		}
		kEnd, err := skipString(b, i)
		if err != nil {
			return 0, err
		}
		key := b[i+1 : kEnd-1]
		i = skipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return 0, errBadJSON
		}
		i = skipWS(b, i+1)
		vEnd, err := skipValue(b, i)
		if err != nil {
			return 0, err
		}
		v := b[i:vEnd]
		switch string(key) {
		case "channel":
			m.Channel = unquote(v)
		case "id":
			m.ID = v
		case "clientId":
			m.ClientID = unquote(v)
		case "successful":
			m.Successful = 0
			if string(v) == "true" {
				m.Successful = 1
			}
		case "data":
			m.Data = v
		case "ext":
			m.Ext = v
		case "advice":
			m.Advice = v
		case "error":
			m.Error = unquote(v)
		}
		i = skipWS(b, vEnd)
		if i >= len(b) {
			return 0, errBadJSON
		}
		if b[i] == '}' {
			fn(&m)
			return i + 1, nil
		}
		if b[i] != ',' {
			return 0, errBadJSON
		}
		i = skipWS(b, i+1)
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] ('"').
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errBadJSON
}

// skipValue returns the index after the JSON value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errBadJSON
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipString(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errBadJSON
	default: // number, true, false, null
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\r' && b[j] != '\t' {
			j++
		}
		if j == i {
			return 0, errBadJSON
		}
		return j, nil
	}
}

// unquote returns the contents of a JSON string value (nil if v is not a
// string). Escapes are left as they are; only the error text may hold
// any, and it is only reported.
func unquote(v []byte) []byte {
	if len(v) < 2 || v[0] != '"' {
		return nil
	}
	return v[1 : len(v)-1]
}

// intField finds "key":<integer> in a small JSON object (ext, advice) and
// returns the integer.
func intField(obj []byte, key string) (int64, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(obj, &m) != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(string(m[key]), 10, 64)
	return v, err == nil
}

// msgBuilder writes Bayeux request messages without encoding/json.
type msgBuilder []byte

func (b msgBuilder) open(channel, clientID, id string) msgBuilder {
	b = append(b, `{"channel":`...)
	b = strconv.AppendQuote(b, channel)
	if clientID != "" {
		b = append(b, `,"clientId":`...)
		b = strconv.AppendQuote(b, clientID)
	}
	if id != "" {
		b = append(b, `,"id":`...)
		b = strconv.AppendQuote(b, id)
	}
	return b
}

func (b msgBuilder) raw(key string, v []byte) msgBuilder {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return append(b, v...)
}

func (b msgBuilder) str(key, v string) msgBuilder {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return strconv.AppendQuote(b, v)
}

func (b msgBuilder) close() msgBuilder { return append(b, '}') }
