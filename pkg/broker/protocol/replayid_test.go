package protocol

import (
	"encoding/json"
	"testing"
)

func TestAppendReplayID(t *testing.T) {
	tests := []struct {
		name, data, want string // want: the data as delivered ("" = unchanged)
	}{
		{"object without event", `{"a":1}`, `{"event":{"replayId":7},"a":1}`},
		{"empty object", `{}`, `{"event":{"replayId":7}}`},
		{"salesforce shape", `{"schema":"s","payload":{"x":"}"},"event":{"EventUuid":"u"}}`,
			`{"schema":"s","payload":{"x":"}"},"event":{"replayId":7,"EventUuid":"u"}}`},
		{"empty event", `{"event":{}}`, `{"event":{"replayId":7}}`},
		{"existing replayId replaced", `{"event":{"replayId":3,"b":[1,{"replayId":4}]}}`, `{"event":{"replayId":7,"b":[1,{"replayId":4}]}}`},
		{"whitespace kept", "{ \"event\" : { \"k\" : \"v\" } , \"z\" : 0 }", "{ \"event\" : {\"replayId\":7, \"k\" : \"v\" } , \"z\" : 0 }"},
		{"event not an object", `{"event":"x"}`, ""},
		{"string data", `"hello"`, ""},
		{"array data", `[1,2]`, ""},
		{"null data", `null`, ""},
		{"escaped key is another key", `{"ev\u0065nt":1}`, `{"event":{"replayId":7},"ev\u0065nt":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			payload := AppendPublication(nil, "/event/x", json.RawMessage(tc.data), json.RawMessage(`"5"`), nil)
			out, ok := AppendReplayID(nil, payload, 7)
			if !ok {
				t.Fatalf("not ok for %s", payload)
			}
			var got struct {
				Channel string
				Data    json.RawMessage
				ID      string
				Ext     struct{ Replay int64 }
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("output %s is not JSON: %v", out, err)
			}
			want := tc.want
			if want == "" {
				want = tc.data
			}
			if string(got.Data) != want || got.Ext.Replay != 7 || got.Channel != "/event/x" || got.ID != "5" {
				t.Fatalf("got %s\nwant data %s with ext.replay 7", out, want)
			}
		})
	}
	if _, ok := AppendReplayID(nil, []byte(`{"channel":"/x"`), 1); ok {
		t.Fatal("a payload not ending in } accepted")
	}
}

func BenchmarkAppendReplayID(b *testing.B) {
	payload := AppendPublication(nil, "/event/Order__e",
		json.RawMessage(`{"schema":"abc","payload":{"CreatedDate":"2026-12-06T05:00:00Z","Amount__c":42,"Note__c":"x"},"event":{"EventUuid":"5e3b"}}`), nil, nil)
	var dst []byte
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		dst, _ = AppendReplayID(dst[:0], payload, uint64(i))
	}
}
