package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func fuzzSeeds() []string {
	return []string{
		`[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"],"id":"1"}]`,
		`{"channel":"/meta/connect","clientId":"abc","connectionType":"websocket","advice":{"timeout":0}}`,
		`[{"channel":"/meta/subscribe","clientId":"abc","subscription":["/a/*","/b"],"id":2}]`,
		`[{"channel":"/a","data":{"x":[1,2,"\u2028"]},"ext":{"ack":3},"id":"p"}]`,
		`[1,"x",null,{"channel":5},{"subscription":5,"channel":"/a"},{"id":{"a":1},"channel":"/a"}]`,
		`[{"channel":"/big","id":"b","data":"` + strings.Repeat("y", 300) + `"}]`,
		`[]`, `{}`, `null`, `42`, `"s"`, `[{"channel":`, "\xff\xfe", `[{"channel":"\ud800"}]`,
	}
}

// FuzzDecode checks the decoder never panics, never returns a message it
// neither accepts (non-empty channel) nor rejects (Invalid), and that every
// message can be answered with a reply echoing its id as valid JSON.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, lim := range []Limits{{}, {MaxMessages: 4, MaxMessageBytes: 64}} {
			msgs, err := Decode(body, lim)
			if err != nil {
				var re *RequestError
				if !errors.As(err, &re) || re.Err == nil {
					t.Fatalf("error %v is not a *RequestError", err)
				}
				if _, ok := ParseError(re.Err.String()); !ok {
					t.Fatalf("request error %q does not parse", re.Err)
				}
				continue
			}
			max := lim.withDefaults().MaxMessages
			if (len(msgs) == 0 && !emptyArray(body)) || len(msgs) > max {
				t.Fatalf("%d messages without error (max %d)", len(msgs), max)
			}
			refs := referenceObjects(body)
			replies := []byte{'['}
			for i, m := range msgs {
				if i < len(refs) {
					checkAgainstReference(t, m, refs[i])
				}
				if m.Invalid == nil && m.Channel == "" {
					t.Fatalf("message %d neither valid nor rejected: %v", i, m)
				}
				if len(m.ID) > 0 && !isStringOrNumber(m.ID) {
					t.Fatalf("message %d: id %s is neither a string nor a number", i, m.ID)
				}
				r := ReplyTo(m)
				if m.Invalid != nil {
					if _, ok := ParseError(m.Invalid.String()); !ok {
						t.Fatalf("invalid reason %q does not parse", m.Invalid)
					}
					r.Fail(m.Invalid)
				} else {
					r.Succeed()
					r.Subscription = &m.Subscription
					pub := AppendPublication(nil, m.Channel, m.Data, m.ID, m.Ext)
					if !json.Valid(pub) {
						t.Fatalf("publication of message %d is invalid JSON: %s", i, pub)
					}
				}
				if i > 0 {
					replies = append(replies, ',')
				}
				replies = AppendReply(replies, r)
			}
			replies = append(replies, ']')
			if !json.Valid(replies) {
				t.Fatalf("replies are invalid JSON: %s", replies)
			}
		}
	})
}

// isStringOrNumber reports whether raw is one JSON string or number.
func isStringOrNumber(raw []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return false
	}
	switch v.(type) {
	case string, json.Number:
		return true
	}
	return false
}

// referenceObjects splits body as a plain JSON consumer would: each element
// as a map with exact (case-sensitive) keys; nil for a non-object.
func referenceObjects(body []byte) []map[string]json.RawMessage {
	body = bytes.TrimSpace(body)
	var raws []json.RawMessage
	if len(body) > 0 && body[0] == '{' {
		raws = []json.RawMessage{body}
	} else if json.Unmarshal(body, &raws) != nil {
		return nil
	}
	out := make([]map[string]json.RawMessage, len(raws))
	for i, r := range raws {
		_ = json.Unmarshal(r, &out[i])
	}
	return out
}

// checkAgainstReference asserts the decoder reads fields exactly as a
// case-sensitive JSON consumer does: a channel it reports is the value of
// the key "channel", and every field of a valid message equals the value of
// its exact key (absent when the key is absent).
func checkAgainstReference(t *testing.T, m *Message, ref map[string]json.RawMessage) {
	t.Helper()
	if m.Channel != "" {
		var ch string
		if err := json.Unmarshal(ref["channel"], &ch); err != nil || ch != m.Channel {
			t.Fatalf("decoded channel %q, but key \"channel\" is %s", m.Channel, ref["channel"])
		}
	}
	if m.Invalid != nil {
		return
	}
	for _, f := range []struct {
		key string
		got []byte
	}{{"id", m.ID}, {"data", m.Data}} {
		if !sameJSON(f.got, ref[f.key]) {
			t.Fatalf("decoded %s %s, but key %q is %s", f.key, f.got, f.key, ref[f.key])
		}
	}
	// Other fields as a case-sensitive decoder of the same types reads them
	// (null and absent are the zero value).
	for _, f := range []struct {
		key, got string
	}{{"clientId", m.ClientID}, {"version", m.Version}, {"minimumVersion", m.MinimumVersion}, {"connectionType", m.ConnectionType}} {
		var want string
		_ = json.Unmarshal(ref[f.key], &want)
		if f.got != want {
			t.Fatalf("decoded %s %q, but key %q is %s", f.key, f.got, f.key, ref[f.key])
		}
	}
	var sct []string
	_ = json.Unmarshal(ref["supportedConnectionTypes"], &sct)
	if !slices.Equal(m.SupportedConnectionTypes, sct) {
		t.Fatalf("decoded supportedConnectionTypes %q, but the key is %s", m.SupportedConnectionTypes, ref["supportedConnectionTypes"])
	}
	var want Subscription
	switch raw := bytes.TrimSpace(ref["subscription"]); {
	case bytes.Equal(raw, []byte("null")):
		return // TestDecodeNullSubscriptionIsAbsent covers it
	case len(raw) == 0:
	case raw[0] == '[':
		want.Array = true
		_ = json.Unmarshal(raw, &want.Names)
	default:
		want.Names = []string{""}
		_ = json.Unmarshal(raw, &want.Names[0])
	}
	if m.Subscription.Array != want.Array || !slices.Equal(m.Subscription.Names, want.Names) {
		t.Fatalf("decoded subscription %+v, but key \"subscription\" is %s", m.Subscription, ref["subscription"])
	}
}

// sameJSON reports whether a and b are the same JSON value (both absent
// counts as the same).
func sameJSON(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	decode := func(raw []byte) (any, bool) {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v) == nil
	}
	va, oka := decode(a)
	vb, okb := decode(b)
	return oka && okb && reflect.DeepEqual(va, vb)
}

// emptyArray reports whether body is an empty JSON array, the one request
// that decodes to no message without an error.
func emptyArray(body []byte) bool {
	var v []json.RawMessage
	return json.Unmarshal(body, &v) == nil && v != nil && len(v) == 0
}
