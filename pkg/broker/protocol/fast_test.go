package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// slowDecode is decodeOne's encoding/json path on its own.
func slowDecode(raw []byte) (*Message, bool) {
	m := &Message{}
	if _, inexact := topLevelKeys(raw); inexact {
		raw = exactOnly(raw)
	}
	if json.Unmarshal(raw, m) != nil {
		return nil, false
	}
	return m, true
}

// checkFastMatchesSlow fails if decodeFast accepts raw (a valid JSON
// object) but decodes it differently from encoding/json.
func checkFastMatchesSlow(t *testing.T, raw []byte) (fast bool) {
	t.Helper()
	var m Message
	if !decodeFast(raw, &m) {
		return false
	}
	want, ok := slowDecode(raw)
	if !ok {
		t.Fatalf("fast path accepted %s, which encoding/json rejects", raw)
	}
	// Raw fields may differ in nothing but being copied.
	if !reflect.DeepEqual(&m, want) {
		t.Fatalf("fast path decoded %s as\n%+v\nencoding/json as\n%+v", raw, m, *want)
	}
	return true
}

func TestDecodeFastMatchesSlow(t *testing.T) {
	cases := []struct {
		raw  string
		fast bool // whether the fast path takes it
	}{
		{`{"channel":"/meta/connect","clientId":"abc","connectionType":"websocket","id":"7"}`, true},
		{`{"channel":"/a/b","data":{"p":1,"s":[1,2,{"x":"}"}]},"id":12,"clientId":"c"}`, true},
		{` { "channel" : "/a" , "ext" : {"ack":3} } `, true},
		{`{"channel":"/meta/connect","advice":{"timeout":0},"clientId":"c"}`, true},
		{`{"channel":"/meta/subscribe","subscription":["/a","/b/*"],"clientId":"c"}`, true},
		{`{"channel":"/meta/subscribe","subscription":"/a"}`, true},
		{`{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["websocket"],"minimumVersion":"1.0"}`, true},
		{`{"channel":"/é/ü","unknown":[1,2,3]}`, true},
		{`{}`, true},
		// encoding/json semantics the fast path leaves to encoding/json:
		{`{"channel":"/a\/b"}`, false},                       // escape
		{`{"channel":"/a","data":null}`, false},              // null
		{`{"channel":"/a","channel":"/b"}`, false},           // repeated key
		{`{"Channel":"/a","channel":"/b"}`, false},           // case-folded key
		{`{"channel":5}`, false},                             // wrong type
		{`{"channel":"/a","advice":{"timeout":"x"}}`, false}, // wrong type inside advice
		{`{"channel":"/a","subscription":5}`, false},
		{"{\"channel\":\"/a\xff\"}", false}, // invalid UTF-8
	}
	for _, c := range cases {
		if !json.Valid([]byte(c.raw)) {
			t.Fatalf("case %s is not valid JSON", c.raw)
		}
		if got := checkFastMatchesSlow(t, []byte(c.raw)); got != c.fast {
			t.Errorf("%s: fast path taken = %v, want %v", c.raw, got, c.fast)
		}
	}
}

// FuzzDecodeFast: on every valid object the fuzzer finds, the fast path
// either declines or agrees with encoding/json exactly.
func FuzzDecodeFast(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		body = bytes.TrimSpace(body)
		if !json.Valid(body) {
			return
		}
		var elems [][]byte
		if len(body) > 0 && body[0] == '[' {
			var ok bool
			if elems, ok = splitArray(body, nil); !ok {
				t.Fatalf("splitArray failed on valid %s", body)
			}
			var ref []json.RawMessage
			_ = json.Unmarshal(body, &ref)
			if len(ref) != len(elems) {
				t.Fatalf("splitArray found %d elements, encoding/json %d", len(elems), len(ref))
			}
			for i := range ref {
				if !bytes.Equal(ref[i], elems[i]) {
					t.Fatalf("element %d: %s, encoding/json %s", i, elems[i], ref[i])
				}
			}
		} else {
			elems = [][]byte{body}
		}
		for _, e := range elems {
			if len(e) > 0 && e[0] == '{' {
				checkFastMatchesSlow(t, e)
			}
		}
	})
}

func TestAppendReplyFastMatchesMarshal(t *testing.T) {
	tr, fa := true, false
	cases := []struct {
		r    Reply
		fast bool
	}{
		{Reply{Channel: "/a", ID: json.RawMessage(`"12"`), Successful: &tr}, true},
		{Reply{Channel: "/meta/connect", ID: json.RawMessage(`7`), ClientID: "abc", Successful: &tr,
			Advice: &Advice{Reconnect: ReconnectRetry, Interval: Int64(0), Timeout: Int64(30000)}}, true},
		{Reply{Channel: "/meta/connect", Successful: &fa, Error: "402:abc:Unknown <client>",
			Advice: &Advice{Reconnect: ReconnectHandshake, Interval: Int64(0), MaxInterval: Int64(5), MultipleClients: true}}, true},
		{Reply{Channel: "/meta/handshake", Version: "1.0", Successful: &tr, Advice: &Advice{}}, true},
		{Reply{Channel: "/a\u2028", ID: json.RawMessage(`-1.5e3`)}, true},
		{Reply{Channel: "/a", ID: json.RawMessage(`"<x>"`)}, false},
		{Reply{Channel: "/a", ID: json.RawMessage(`"a\"b"`)}, false},
		{Reply{Channel: "/a", Ext: map[string]any{"ack": 1}}, false},
		{Reply{Channel: "/a", Data: json.RawMessage(`{}`)}, false},
		{Reply{Channel: "/a", Advice: &Advice{Hosts: []string{"h:1"}}}, false},
		{Reply{Channel: "/a", SupportedConnectionTypes: []string{"websocket"}}, false},
	}
	for _, c := range cases {
		out, ok := appendReplyFast([]byte("x"), &c.r)
		if ok != c.fast {
			t.Errorf("%+v: fast = %v, want %v", c.r, ok, c.fast)
			continue
		}
		want, err := json.Marshal(&c.r)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			continue
		}
		if string(out[:1]) != "x" {
			t.Fatalf("dst prefix lost: %s", out)
		}
		if !bytes.Equal(out[1:], want) {
			t.Errorf("fast %s\nwant %s", out[1:], want)
		}
	}
}
