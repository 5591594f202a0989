package protocol

import (
	"bytes"
	"strconv"
)

// AppendReplayID appends to dst the publication payload (as built by
// AppendPublication without ext) with its replay id in the two places
// Salesforce-style clients read it: ext.replay, and data.event.replayId
// when data is a JSON object (Salesforce's event shape; data.event is
// created when absent, an existing data.event.replayId is replaced, other
// fields are untouched; a data.event that is not an object is left alone).
// A payload of another shape gets ext.replay only; ok is false if the
// payload does not end in '}' (nothing is appended then).
func AppendReplayID(dst, payload []byte, id uint64) (_ []byte, ok bool) {
	if len(payload) < 2 || payload[len(payload)-1] != '}' {
		return dst, false
	}
	body := payload[:len(payload)-1]
	if ds, de, found := dataObject(body); found {
		dst = appendWithEventID(dst, body, ds, de, id)
	} else {
		dst = append(dst, body...)
	}
	dst = append(dst, `,"ext":{"replay":`...)
	dst = strconv.AppendUint(dst, id, 10)
	return append(dst, "}}"...), true
}

// dataObject finds the value of the "data" member of an encoded
// publication when it is an object: b[start:end] is that object.
func dataObject(b []byte) (start, end int, ok bool) {
	const head = `{"channel":`
	if !bytes.HasPrefix(b, []byte(head)) {
		return 0, 0, false
	}
	i, ok := stringEnd(b, len(head))
	if !ok || !bytes.HasPrefix(b[i:], []byte(`,"data":`)) {
		return 0, 0, false
	}
	i = skipSpace(b, i+len(`,"data":`))
	if i >= len(b) || b[i] != '{' {
		return 0, 0, false
	}
	e, ok := valueEnd(b, i)
	return i, e, ok
}

// member is one member of a JSON object: b[key:colon] is the quoted key,
// b[val:end] its value.
type member struct{ key, keyEnd, val, end int }

// members lists the members of the object b[start:end]; ok is false if
// it is not well formed.
func members(b []byte, start, end int) (ms []member, ok bool) {
	i := skipSpace(b, start+1)
	if i < end && b[i] == '}' {
		return nil, true
	}
	for i < end {
		if b[i] != '"' {
			return nil, false
		}
		ke, ok := stringEnd(b, i)
		if !ok {
			return nil, false
		}
		j := skipSpace(b, ke)
		if j >= end || b[j] != ':' {
			return nil, false
		}
		v := skipSpace(b, j+1)
		ve, ok := valueEnd(b, v)
		if !ok {
			return nil, false
		}
		ms = append(ms, member{key: i, keyEnd: ke, val: v, end: ve})
		i = skipSpace(b, ve)
		if i < end && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < end && b[i] == '}' {
			return ms, true
		}
		return nil, false
	}
	return nil, false
}

// appendWithEventID appends body with data.event.replayId set; the data
// object is body[ds:de].
func appendWithEventID(dst, body []byte, ds, de int, id uint64) []byte {
	ms, ok := members(body, ds, de)
	if !ok {
		return append(dst, body...)
	}
	for _, m := range ms {
		if string(body[m.key:m.keyEnd]) != `"event"` {
			continue
		}
		if body[m.val] != '{' {
			return append(dst, body...) // not Salesforce's shape: leave it
		}
		evs, ok := members(body, m.val, m.end)
		if !ok {
			return append(dst, body...)
		}
		for _, ev := range evs {
			if string(body[ev.key:ev.keyEnd]) == `"replayId"` { // replace
				dst = append(dst, body[:ev.val]...)
				dst = strconv.AppendUint(dst, id, 10)
				return append(dst, body[ev.end:]...)
			}
		}
		dst = append(dst, body[:m.val+1]...) // insert first in data.event
		dst = append(dst, `"replayId":`...)
		dst = strconv.AppendUint(dst, id, 10)
		if len(evs) > 0 {
			dst = append(dst, ',')
		}
		return append(dst, body[m.val+1:]...)
	}
	dst = append(dst, body[:ds+1]...) // no data.event: create it
	dst = append(dst, `"event":{"replayId":`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, '}')
	if len(ms) > 0 {
		dst = append(dst, ',')
	}
	return append(dst, body[ds+1:]...)
}
