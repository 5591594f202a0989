package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// wantMsg is the expected outcome for one decoded message. code 0 means the
// message must be valid; otherwise Invalid must carry that code.
type wantMsg struct {
	channel string
	id      string // raw JSON of the echoed id; "" means absent
	code    int
}

func TestDecode(t *testing.T) {
	lim := Limits{MaxMessages: 3, MaxMessageBytes: 128}
	big := `{"channel":"/big","id":"b1","data":"` + strings.Repeat("x", 200) + `"}`
	tests := []struct {
		name    string
		body    string
		reqCode int // request-level error code; 0 = none
		want    []wantMsg
	}{
		// Shapes.
		{"array of one", `[{"channel":"/a","data":1,"id":"1"}]`, 0, []wantMsg{{"/a", `"1"`, 0}}},
		{"array of three", `[{"channel":"/a"},{"channel":"/b","id":2},{"channel":"/c","id":-3.5}]`, 0,
			[]wantMsg{{"/a", "", 0}, {"/b", "2", 0}, {"/c", "-3.5", 0}}},
		{"single object", `{"channel":"/meta/connect","id":"x"}`, 0, []wantMsg{{"/meta/connect", `"x"`, 0}}},
		{"surrounding whitespace", " \n\t[{\"channel\":\"/a\"}]\r\n ", 0, []wantMsg{{"/a", "", 0}}},
		{"non-object elements", `[1,"s",{"channel":"/ok"}]`, 0, []wantMsg{{"", "", 400}, {"", "", 400}, {"/ok", "", 0}}},
		{"more non-object elements", `[null,true,[]]`, 0, []wantMsg{{"", "", 400}, {"", "", 400}, {"", "", 400}}},

		// Wrong field types, one per field.
		{"channel number", `[{"channel":5,"id":"1"}]`, 0, []wantMsg{{"", `"1"`, 400}}},
		{"channel object", `[{"channel":{},"id":"1"}]`, 0, []wantMsg{{"", `"1"`, 400}}},
		{"clientId number", `[{"channel":"/meta/connect","clientId":7,"id":"1"}]`, 0, []wantMsg{{"/meta/connect", `"1"`, 400}}},
		{"version number", `[{"channel":"/meta/handshake","version":1.0,"id":"1"}]`, 0, []wantMsg{{"/meta/handshake", `"1"`, 400}}},
		{"minimumVersion array", `[{"channel":"/meta/handshake","minimumVersion":[],"id":"1"}]`, 0, []wantMsg{{"/meta/handshake", `"1"`, 400}}},
		{"supportedConnectionTypes string", `[{"channel":"/meta/handshake","supportedConnectionTypes":"long-polling","id":"1"}]`, 0,
			[]wantMsg{{"/meta/handshake", `"1"`, 400}}},
		{"supportedConnectionTypes numbers", `[{"channel":"/meta/handshake","supportedConnectionTypes":[1],"id":"1"}]`, 0,
			[]wantMsg{{"/meta/handshake", `"1"`, 400}}},
		{"connectionType bool", `[{"channel":"/meta/connect","connectionType":true,"id":"1"}]`, 0, []wantMsg{{"/meta/connect", `"1"`, 400}}},
		{"subscription number", `[{"channel":"/meta/subscribe","id":"1","subscription":5}]`, 0, []wantMsg{{"/meta/subscribe", `"1"`, 400}}},
		{"subscription object", `[{"channel":"/meta/subscribe","id":"1","subscription":{}}]`, 0, []wantMsg{{"/meta/subscribe", `"1"`, 400}}},
		{"subscription array of numbers", `[{"channel":"/meta/subscribe","id":"1","subscription":[1]}]`, 0, []wantMsg{{"/meta/subscribe", `"1"`, 400}}},
		{"advice string", `[{"channel":"/meta/connect","advice":"x","id":"1"}]`, 0, []wantMsg{{"/meta/connect", `"1"`, 400}}},
		{"advice timeout string", `[{"channel":"/meta/connect","advice":{"timeout":"1"},"id":"1"}]`, 0, []wantMsg{{"/meta/connect", `"1"`, 400}}},
		{"ext string", `[{"channel":"/a","ext":"x","id":"1"}]`, 0, []wantMsg{{"/a", `"1"`, 400}}},
		{"ext array", `[{"channel":"/a","ext":[],"id":"1"}]`, 0, []wantMsg{{"/a", `"1"`, 400}}},
		{"ext number", `[{"channel":"/a","ext":1}]`, 0, []wantMsg{{"/a", "", 400}}},
		{"ext null is absent", `[{"channel":"/a","ext":null}]`, 0, []wantMsg{{"/a", "", 0}}},
		{"ext object", `[{"channel":"/a","ext":{"ack":true}}]`, 0, []wantMsg{{"/a", "", 0}}},
		{"id object", `[{"channel":"/a","id":{"x":1}}]`, 0, []wantMsg{{"/a", "", 400}}},
		{"id array", `[{"channel":"/a","id":["x"]}]`, 0, []wantMsg{{"/a", "", 400}}},
		{"id bool", `[{"channel":"/a","id":true}]`, 0, []wantMsg{{"/a", "", 400}}},
		{"data any JSON", `[{"channel":"/a","data":[1,{"b":null}]}]`, 0, []wantMsg{{"/a", "", 0}}},

		// The reply to a message with a wrongly typed field must still echo
		// its channel and id, whatever the order of the keys.
		{"subscription wrong type before channel and id", `[{"subscription":5,"channel":"/meta/subscribe","id":"k1"}]`, 0,
			[]wantMsg{{"/meta/subscribe", `"k1"`, 400}}},
		{"advice wrong type before channel and id", `[{"advice":"x","channel":"/meta/connect","id":"k2"}]`, 0,
			[]wantMsg{{"/meta/connect", `"k2"`, 400}}},

		// Missing channel.
		{"missing channel", `[{"data":1,"id":"1"}]`, 0, []wantMsg{{"", `"1"`, 400}}},
		{"empty channel", `[{"channel":""}]`, 0, []wantMsg{{"", "", 400}}},
		{"empty object", `{}`, 0, []wantMsg{{"", "", 400}}},

		// Limits.
		{"too many messages", `[{"channel":"/a"},{"channel":"/a"},{"channel":"/a"},{"channel":"/a"}]`, 429, nil},
		{"max messages exactly", `[{"channel":"/a"},{"channel":"/a"},{"channel":"/a"}]`, 0,
			[]wantMsg{{"/a", "", 0}, {"/a", "", 0}, {"/a", "", 0}}},
		{"too large keeps channel and id", `[` + big + `,{"channel":"/small"}]`, 0, []wantMsg{{"/big", `"b1"`, 413}, {"/small", "", 0}}},
		{"too large single object", big, 0, []wantMsg{{"/big", `"b1"`, 413}}},
		{"too large with a case variant of channel", `[{"channel":"/big","CHANNEL":"/meta/handshake","id":"b1","data":"` + strings.Repeat("x", 200) + `"}]`, 0,
			[]wantMsg{{"/big", `"b1"`, 413}}},
		{"too large with bad id", `[{"channel":"/big","id":{"a":1},"data":"` + strings.Repeat("x", 200) + `"}]`, 0,
			[]wantMsg{{"/big", "", 413}}},

		{"empty array (a keep-alive, answered with [])", `[]`, 0, []wantMsg{}},
		{"empty array with spaces", ` [ ] `, 0, []wantMsg{}},

		// Request-level errors.
		{"empty body", ``, 400, nil},
		{"whitespace body", " \n ", 400, nil},
		{"malformed array", `[{"channel":"/a"}`, 400, nil},
		{"malformed object", `{"channel":"/a",}`, 400, nil},
		{"trailing garbage", `[{"channel":"/a"}] x`, 400, nil},
		{"two objects", `{"channel":"/a"}{"channel":"/b"}`, 400, nil},
		{"number", `42`, 400, nil},
		{"string", `"hello"`, 400, nil},
		{"null", `null`, 400, nil},
		{"true", `true`, 400, nil},
		{"false", `false`, 400, nil},
		{"garbage", `hello`, 400, nil},
		{"nested too deep", strings.Repeat("[", 20000) + strings.Repeat("]", 20000), 400, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := Decode([]byte(tt.body), lim)
			if tt.reqCode != 0 {
				var re *RequestError
				if !errors.As(err, &re) {
					t.Fatalf("err = %v (%d msgs), want RequestError %d", err, len(msgs), tt.reqCode)
				}
				if re.Err.Code != tt.reqCode {
					t.Fatalf("code = %d (%s), want %d", re.Err.Code, re.Err, tt.reqCode)
				}
				if len(msgs) != 0 {
					t.Fatalf("got %d messages with a request error", len(msgs))
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			checkMsgs(t, msgs, tt.want)
		})
	}
}

func checkMsgs(t *testing.T, msgs []*Message, want []wantMsg) {
	t.Helper()
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages %v, want %d", len(msgs), msgs, len(want))
	}
	for i, w := range want {
		m := msgs[i]
		if m.Channel != w.channel {
			t.Errorf("msg %d: channel %q, want %q", i, m.Channel, w.channel)
		}
		if string(m.ID) != w.id {
			t.Errorf("msg %d: id %s, want %s", i, m.ID, w.id)
		}
		switch {
		case w.code == 0 && m.Invalid != nil:
			t.Errorf("msg %d: unexpected Invalid %s", i, m.Invalid)
		case w.code != 0 && m.Invalid == nil:
			t.Errorf("msg %d: valid, want error %d", i, w.code)
		case w.code != 0 && m.Invalid.Code != w.code:
			t.Errorf("msg %d: error %s, want code %d", i, m.Invalid, w.code)
		}
	}
}

// TestDecodeFieldNamesAreCaseSensitive: JSON keys are case-sensitive and
// Bayeux defines "channel", not "Channel". A message must not be read
// differently by the broker than by every other JSON consumer (proxies,
// loggers, clients), e.g. {"channel":"/a","CHANNEL":"/meta/handshake"}.
func TestDecodeFieldNamesAreCaseSensitive(t *testing.T) {
	tests := []struct {
		body string
		want wantMsg
	}{
		{`{"Channel":"/a","data":1}`, wantMsg{"", "", 400}},
		{`{"channel":"/a","CHANNEL":"/meta/handshake","data":1}`, wantMsg{"/a", "", 0}},
		{`{"channel":"/a","ID":"x"}`, wantMsg{"/a", "", 0}},
		{`{"CHANNEL":"/meta/handshake","channel":"/a"}`, wantMsg{"/a", "", 0}},
		{`{"id":"1","Id":{"x":1},"channel":"/a"}`, wantMsg{"/a", `"1"`, 0}},
		// An escaped key is the same key: "ch\u0061nnel" is "channel".
		{`{"ch\u0061nnel":"/a","data":1}`, wantMsg{"/a", "", 0}},
		{`{"channel":"/a","Data":{"x":1},"data":2,"EXT":"e"}`, wantMsg{"/a", "", 0}},
		{`{"channel":"/meta/connect","clientId":"c1","CLIENTID":"c2","connectionType":"long-polling","ConnectionType":"x"}`, wantMsg{"/meta/connect", "", 0}},
		// Unicode case folding: U+017F (long s) folds to "s".
		{`{"channel":"/meta/subscribe","subscription":"/a","ſubscription":"/meta/x"}`, wantMsg{"/meta/subscribe", "", 0}},
		{`{"channel":"/meta/subscribe","ſubscription":"/meta/x"}`, wantMsg{"/meta/subscribe", "", 0}},
		{`{"channel":"/meta/handshake","version":"1.0","verſion":"2.0","supportedConnectionTypes":["websocket"],"ſupportedConnectionTypes":["x"]}`,
			wantMsg{"/meta/handshake", "", 0}},
		{"{\"channel\":\"/meta/handshake\",\"version\":\"1.0\",\"verſion\":\"2.0\"}", wantMsg{"/meta/handshake", "", 0}},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			msgs, err := Decode([]byte(tt.body), Limits{})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			checkMsgs(t, msgs, []wantMsg{tt.want})
			checkAgainstReference(t, msgs[0], referenceObjects([]byte(tt.body))[0])
		})
	}
}

func TestDecodeDefaultsAndFields(t *testing.T) {
	body := `[{"channel":"/meta/handshake","version":"1.0","minimumVersion":"1.0","supportedConnectionTypes":["long-polling","websocket"],"id":"1","ext":{"ack":true}},` +
		`{"channel":"/meta/connect","clientId":"abc","connectionType":"long-polling","advice":{"timeout":0,"interval":5}},` +
		`{"channel":"/meta/subscribe","clientId":"abc","subscription":["/a","/b/*"]},` +
		`{"channel":"/a","clientId":"abc","data":{"k":"v"}}]`
	msgs, err := Decode([]byte(body), Limits{}) // zero limits take the defaults
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(msgs) != 4 {
		t.Fatalf("got %d messages", len(msgs))
	}
	hs, co, su, pu := msgs[0], msgs[1], msgs[2], msgs[3]
	if hs.Version != "1.0" || hs.MinimumVersion != "1.0" || !slices.Equal(hs.SupportedConnectionTypes, []string{"long-polling", "websocket"}) {
		t.Errorf("handshake fields: %+v", hs)
	}
	if got := string(hs.ExtField("ack")); got != "true" {
		t.Errorf("ExtField(ack) = %q", got)
	}
	if hs.ExtField("missing") != nil {
		t.Errorf("ExtField(missing) not nil")
	}
	if co.ClientID != "abc" || co.ConnectionType != "long-polling" || co.Advice == nil || co.Advice.Timeout == nil || *co.Advice.Timeout != 0 {
		t.Errorf("connect fields: %+v", co)
	}
	if !su.Subscription.Array || !slices.Equal(su.Subscription.Names, []string{"/a", "/b/*"}) {
		t.Errorf("subscription: %+v", su.Subscription)
	}
	if string(pu.Data) != `{"k":"v"}` || pu.IsMeta() || !hs.IsMeta() {
		t.Errorf("publish: %+v", pu)
	}
	// Default MaxMessages is 256.
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"channel":"/a"},`, 257), ",") + "]"
	if _, err := Decode([]byte(many), Limits{}); err == nil {
		t.Errorf("257 messages accepted with default limits")
	}
}

func TestDecodeAppend(t *testing.T) {
	lim := Limits{MaxMessages: 3}
	var msgs []*Message
	var err error
	for _, part := range []string{`{"channel":"/a"}`, `[{"channel":"/b"},{"channel":"/c"}]`} {
		if msgs, err = DecodeAppend(msgs, []byte(part), lim); err != nil {
			t.Fatalf("DecodeAppend(%s): %v", part, err)
		}
	}
	got := make([]string, len(msgs))
	for i, m := range msgs {
		got[i] = m.Channel
	}
	if !slices.Equal(got, []string{"/a", "/b", "/c"}) {
		t.Fatalf("channels %v", got)
	}
	// The limit counts the messages already in dst, for both shapes.
	for _, part := range []string{`{"channel":"/d"}`, `[{"channel":"/d"}]`} {
		out, err := DecodeAppend(msgs, []byte(part), lim)
		var re *RequestError
		if !errors.As(err, &re) || re.Err.Code != CodeTooMany {
			t.Fatalf("DecodeAppend over the limit with %s: err %v", part, err)
		}
		if len(out) != 3 {
			t.Fatalf("dst changed to %d messages on error", len(out))
		}
	}
}

func TestSubscriptionRoundTrip(t *testing.T) {
	tests := []struct {
		in    string
		names []string
		array bool
	}{
		{`"/a"`, []string{"/a"}, false},
		{`["/a"]`, []string{"/a"}, true},
		{`["/a","/b/**"]`, []string{"/a", "/b/**"}, true},
		{`[]`, []string{}, true},
		{` [ "/a" ] `, []string{"/a"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var s Subscription
			if err := json.Unmarshal([]byte(tt.in), &s); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if s.Array != tt.array || !slices.Equal(s.Names, tt.names) {
				t.Fatalf("got %+v", s)
			}
			out, err := json.Marshal(s)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			var a, b any
			_ = json.Unmarshal([]byte(tt.in), &a)
			_ = json.Unmarshal(out, &b)
			if ja, jb := mustJSON(t, a), mustJSON(t, b); ja != jb {
				t.Fatalf("round trip %s -> %s", tt.in, out)
			}
		})
	}
	for _, bad := range []string{`5`, `{}`, `[1]`, `true`, `["/a",2]`} {
		var s Subscription
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Errorf("Subscription accepted %s as %+v", bad, s)
		}
	}
	// Absent subscription is omitted from a reply; present is kept.
	r := &Reply{Channel: "/meta/subscribe"}
	if out := AppendReply(nil, r); bytes.Contains(out, []byte("subscription")) {
		t.Errorf("absent subscription encoded: %s", out)
	}
	r.Subscription = &Subscription{Names: []string{"/x"}}
	if out := AppendReply(nil, r); !bytes.Contains(out, []byte(`"subscription":"/x"`)) {
		t.Errorf("subscription not encoded as a string: %s", out)
	}
	if !(Subscription{}).IsZero() || (Subscription{Array: true}).IsZero() {
		t.Errorf("IsZero wrong")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestErrorStringAndParse(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{NewError(401, "No client ID"), "401::No client ID"},
		{NewError(402, "Unknown client", "abc"), "402:abc:Unknown client"},
		{NewError(403, "Subscription denied", "abc", "/foo/bar"), "403:abc,/foo/bar:Subscription denied"},
		{NewError(405, "Invalid channel: bad", "/x"), "405:/x:Invalid channel: bad"},
		{NewError(400, ""), "400::"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.err.String(); got != tt.want {
				t.Fatalf("String = %q, want %q", got, tt.want)
			}
			if tt.err.Error() != tt.want {
				t.Fatalf("Error() differs from String()")
			}
			p, ok := ParseError(tt.want)
			if !ok {
				t.Fatalf("ParseError(%q) failed", tt.want)
			}
			if p.Code != tt.err.Code || p.Message != tt.err.Message || !slices.Equal(p.Args, tt.err.Args) {
				t.Fatalf("ParseError(%q) = %+v, want %+v", tt.want, p, tt.err)
			}
		})
	}
	for _, bad := range []string{"", "400", "400:", "400:x", "40::x", "4000::x", "abc::x", "40a::x", "+40::x", "-40::x", " 40::x", "400-:x"} {
		if e, ok := ParseError(bad); ok {
			t.Errorf("ParseError(%q) accepted: %+v", bad, e)
		}
	}
	re := &RequestError{Err: NewError(CodeTooMany, "Too many", "10")}
	if re.Error() != "429:10:Too many" {
		t.Errorf("RequestError.Error = %q", re.Error())
	}
}

// decodeJSONString decodes enc (a JSON string literal) with encoding/json.
func decodeJSONString(t *testing.T, enc []byte) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(enc, &s); err != nil {
		t.Fatalf("AppendString output %q is not a JSON string: %v", enc, err)
	}
	return s
}

func TestAppendString(t *testing.T) {
	tests := []struct {
		name, in string
		mustHave []string // escapes the output must contain
	}{
		{"empty", "", nil},
		{"plain", "/chat/room-1", nil},
		{"quotes and backslash", `a"b\c`, []string{`\"`, `\\`}},
		{"newline tab cr", "a\nb\tc\rd", []string{`\n`, `\t`, `\r`}},
		{"other controls", "\x00\x01\x08\x0c\x1f", []string{`\u0000`, `\u0001`, `\u0008`, `\u000c`, `\u001f`}},
		{"html", "<script>&</script>", []string{`\u003c`, `\u003e`, `\u0026`}},
		{"line separators", "a\u2028b\u2029c", []string{`\u2028`, `\u2029`}},
		{"multibyte", "héllo wörld ☃ 𝄞", nil},
		{"replacement char kept", "\ufffd", nil},
		{"invalid utf8", "a\xffb\xc3", []string{`\ufffd`}},
		{"truncated sequence", "\xe2\x80", []string{`\ufffd`}},
		{"surrogate half", "\xed\xa0\x80", []string{`\ufffd`}},
		{"del", "\x7f", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("xx")
			out := AppendString(prefix, tt.in)
			if !bytes.HasPrefix(out, []byte("xx")) {
				t.Fatalf("dst prefix lost: %q", out)
			}
			enc := out[2:]
			checkSafeJSONString(t, enc)
			// Invalid bytes become U+FFFD one for one, as []rune does.
			if got, want := decodeJSONString(t, enc), string([]rune(tt.in)); got != want {
				t.Fatalf("decoded %q, want %q", got, want)
			}
			for _, e := range tt.mustHave {
				if !bytes.Contains(enc, []byte(e)) {
					t.Errorf("output %s lacks %s", enc, e)
				}
			}
		})
	}
}

// checkSafeJSONString asserts enc is valid UTF-8 with no raw control
// characters, no raw < > &, and no raw U+2028/U+2029 (safe in JSONP).
func checkSafeJSONString(t *testing.T, enc []byte) {
	t.Helper()
	if !utf8.Valid(enc) {
		t.Fatalf("output %q is not valid UTF-8", enc)
	}
	for _, r := range string(enc) {
		if r < 0x20 || r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029' {
			t.Fatalf("output %q contains raw %U", enc, r)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "\u2028", "\xff", "<&>", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := AppendString(nil, s)
		checkSafeJSONString(t, enc)
		if got := decodeJSONString(t, enc); got != string([]rune(s)) {
			t.Fatalf("AppendString(%q) decodes to %q", s, got)
		}
	})
}

func TestAppendPublication(t *testing.T) {
	tests := []struct {
		name                string
		channel             string
		data, id, ext, want string
	}{
		{"data only", "/a", `{"x":1}`, "", "", `{"channel":"/a","data":{"x":1}}`},
		{"nil data is null", "/a", "", "", "", `{"channel":"/a","data":null}`},
		{"id and ext", "/a/b", `"s"`, `"42"`, `{"replay":7}`, `{"channel":"/a/b","data":"s","id":"42","ext":{"replay":7}}`},
		{"numeric id", "/a", `[1,2]`, `7`, "", `{"channel":"/a","data":[1,2],"id":7}`},
		{"channel needs escaping", "/a\"<\u2028", `1`, "", "", `{"channel":"/a\"\u003c\u2028","data":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := func(s string) json.RawMessage {
				if s == "" {
					return nil
				}
				return json.RawMessage(s)
			}
			out := AppendPublication([]byte("["), tt.channel, raw(tt.data), raw(tt.id), raw(tt.ext))
			out = append(out, ']')
			if !json.Valid(out) {
				t.Fatalf("invalid JSON: %s", out)
			}
			var got, want []any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte("["+tt.want+"]"), &want); err != nil {
				t.Fatal(err)
			}
			if mustJSON(t, got) != mustJSON(t, want) {
				t.Fatalf("got %s, want %s", out, tt.want)
			}
			if ch := got[0].(map[string]any)["channel"]; ch != tt.channel {
				t.Fatalf("channel decodes to %q, want %q", ch, tt.channel)
			}
		})
	}
}

func TestAppendReply(t *testing.T) {
	m := &Message{Channel: "/meta/connect", ID: json.RawMessage(`"7"`)}
	r := ReplyTo(m)
	r.Fail(NewError(CodeUnknownClient, "Unknown client", "abc"))
	r.Advice = &Advice{Reconnect: ReconnectHandshake, Interval: Int64(0)}
	out := AppendReply(nil, r)
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("invalid reply %s: %v", out, err)
	}
	if got["channel"] != "/meta/connect" || got["id"] != "7" || got["successful"] != false || got["error"] != "402:abc:Unknown client" {
		t.Fatalf("reply %s", out)
	}
	if adv := got["advice"].(map[string]any); adv["reconnect"] != "handshake" || adv["interval"] != 0.0 {
		t.Fatalf("advice %v", adv)
	}
	if r.OK() {
		t.Fatalf("failed reply reports OK")
	}
	r.Succeed()
	if !r.OK() || r.Error != "" {
		t.Fatalf("Succeed did not clear the error")
	}
	// An ext value that cannot be encoded is dropped, not the reply.
	r.SetExt("bad", make(chan int))
	out = AppendReply([]byte("["), r)
	if !json.Valid(append(out, ']')) || bytes.Contains(out, []byte(`"ext"`)) || !bytes.Contains(out, []byte(`"successful":true`)) {
		t.Fatalf("reply with bad ext: %s", out)
	}
}

// TestDecodeNullSubscriptionIsAbsent: null means absent for every other
// field; "subscription":null must not become a subscription to "".
func TestDecodeNullSubscriptionIsAbsent(t *testing.T) {
	msgs, err := Decode([]byte(`{"channel":"/meta/subscribe","clientId":"c","subscription":null}`), Limits{})
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if s := msgs[0].Subscription; !s.IsZero() {
		t.Fatalf("subscription null decoded as %+v, want absent", s)
	}
}

func TestErrorArgsAreEscaped(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{NewError(402, "Unknown client", "a:b"), "402:a%3Ab:Unknown client"},
		{NewError(403, "Denied", "x,y", "/c"), "403:x%2Cy,/c:Denied"},
		{NewError(400, "Bad", "50%"), "400:50%25:Bad"},
	}
	for _, tt := range tests {
		got := tt.err.String()
		if got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
		parsed, ok := ParseError(got)
		if !ok || len(parsed.Args) != len(tt.err.Args) || parsed.Message != tt.err.Message {
			t.Errorf("ParseError(%q) = %+v, %v", got, parsed, ok)
		}
	}
}

func TestNestingDepthLimit(t *testing.T) {
	deep := func(n int) string {
		return `[{"channel":"/a","data":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}]`
	}
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"within", deep(3), true},
		{"at the limit (depth 6)", deep(4), true},
		{"one over (depth 7)", deep(5), false},
		{"too deep", deep(10), false},
		{"brackets inside a string do not count", `[{"channel":"/a","data":"[[[[[[[[[[[[[[[[\\[["}]`, true},
		{"escaped quote keeps the string open", `[{"channel":"/a","data":"\"[[[[[[[[[[[["}]`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.body), Limits{MaxDepth: 6})
			var re *RequestError
			if tt.ok && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if !tt.ok && (!errors.As(err, &re) || re.Err.Code != CodeBadRequest || !strings.Contains(re.Err.Message, "nested")) {
				t.Fatalf("err = %v, want nesting error", err)
			}
		})
	}
}
