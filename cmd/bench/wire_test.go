package main

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestScanMessages(t *testing.T) {
	// Each message summarised as channel|id|successful|data|ext|advice|clientId|error.
	sum := func(m *wireMsg) string {
		return fmt.Sprintf("%s|%s|%d|%s|%s|%s|%s|%s", m.Channel, m.ID, m.Successful, m.Data, m.Ext, m.Advice, m.ClientID, m.Error)
	}
	cases := []struct {
		name string
		in   string
		want []string
		bad  bool
	}{
		{"empty array", `[]`, nil, false},
		{"one object", `{"channel":"/a","data":{"p":1}}`, []string{`/a||-1|{"p":1}||||`}, false},
		{"delivery and connect reply", `[{"channel":"/b/c","data":{"p":0,"s":5,"t":9},"id":"3"},` +
			`{"channel":"/meta/connect","successful":true,"advice":{"reconnect":"retry","timeout":30000},"clientId":"x1"}]`,
			[]string{`/b/c|"3"|-1|{"p":0,"s":5,"t":9}||||`, `/meta/connect||1|||{"reconnect":"retry","timeout":30000}|x1|`}, false},
		{"strings with brackets and escapes", ` [ { "data" : {"s":"}]\"{[","n":[1,{"a":"]"}]} , "channel" : "/x" } ] `,
			[]string{`/x||-1|{"s":"}]\"{[","n":[1,{"a":"]"}]}||||`}, false},
		{"failure with error and numeric id", `[{"channel":"/a","successful":false,"error":"402:c:Unknown client","id":17,"ext":{"ack":4}}]`,
			[]string{`/a|17|0||{"ack":4}|||402:c:Unknown client`}, false},
		{"literals", `[{"channel":"/a","data":null,"x":true,"y":-1.5e3}]`, []string{`/a||-1|null||||`}, false},
		{"truncated", `[{"channel":"/a"`, nil, true},
		{"not an object", `[1]`, nil, true},
		{"garbage after", `[{"channel":"/a"}] x`, nil, true},
		{"missing comma", `[{"channel":"/a"} {"channel":"/b"}]`, nil, true},
		{"unterminated string", `[{"channel":"/a}]`, nil, true},
		{"empty", ``, nil, true},
	}
	for _, c := range cases {
		var got []string
		err := scanMessages([]byte(c.in), func(m *wireMsg) { got = append(got, sum(m)) })
		if (err != nil) != c.bad {
			t.Errorf("%s: err = %v, want error %v", c.name, err, c.bad)
			continue
		}
		if c.bad {
			continue
		}
		if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

func TestPubID(t *testing.T) {
	cases := []struct {
		seq      int64
		measured bool
	}{{0, false}, {0, true}, {1, false}, {12345, true}, {1 << 40, false}}
	for _, c := range cases {
		id := pubID(c.seq, c.measured)
		for _, raw := range []string{id, `"` + id + `"`} { // servers may echo it either way
			seq, measured, ok := parsePubID([]byte(raw))
			if !ok || seq != c.seq || measured != c.measured {
				t.Errorf("parsePubID(%s) = %d %v %v, want %d %v", raw, seq, measured, ok, c.seq, c.measured)
			}
		}
	}
	for _, bad := range []string{``, `"x"`, `-4`, `"c3"`, `1.5`} {
		if _, _, ok := parsePubID([]byte(bad)); ok {
			t.Errorf("parsePubID(%s) accepted", bad)
		}
	}
}

func TestPublisherAccounting(t *testing.T) {
	cfg := Config{Transport: "websocket", Channels: 5, Publishers: 2, Inflight: 4}
	p := newPublisher(1, cfg) // channels 1 and 3
	msgs := []wireMsg{
		{Channel: []byte("/b/c1"), ID: []byte(`"` + pubID(0, false) + `"`), Successful: 1}, // channel 1
		{Channel: []byte("/b/c3"), ID: []byte(`"` + pubID(1, true) + `"`), Successful: 1},  // channel 3, measured
		{Channel: []byte("/b/c1"), ID: []byte(`"` + pubID(2, true) + `"`), Successful: 0},  // refused
		{Channel: []byte("/meta/connect"), ID: []byte(`"c1"`), Successful: 1},              // not a publish
		{Channel: []byte("/b/c1"), Data: []byte(`{}`), Successful: -1},                     // a delivery
	}
	for range 3 {
		p.window <- struct{}{}
	}
	for i := range msgs {
		p.onMsg(&msgs[i])
	}
	if p.published.Load() != 2 || p.errors.Load() != 1 || p.measured.Load() != 1 {
		t.Errorf("published %d errors %d measured %d, want 2 1 1", p.published.Load(), p.errors.Load(), p.measured.Load())
	}
	if p.acked[0].Load() != 1 || p.acked[1].Load() != 1 {
		t.Errorf("acked per channel %d %d, want 1 1", p.acked[0].Load(), p.acked[1].Load())
	}
	if len(p.window) != 0 {
		t.Errorf("%d window tokens left, want 0 (every publish reply frees one)", len(p.window))
	}
}

func TestPublisherSchedule(t *testing.T) {
	cases := []struct {
		cfg              Config
		idx              int
		channels         []int
		interval, offset time.Duration
		count            int64
		window           int // 0: long-polling, no token window
	}{
		{Config{Transport: "websocket", Channels: 100, Publishers: 10, Rate: 1000, Duration: 10 * time.Second, Warmup: time.Second, Inflight: 32},
			3, nil, 10 * time.Millisecond, 3 * time.Millisecond, 1100, 32},
		{Config{Transport: "long-polling", Channels: 3, Publishers: 2, Rate: 3, Duration: time.Second, Inflight: 8},
			0, []int{0, 2}, 666666666 * time.Nanosecond, 0, 2, 0},
		{Config{Transport: "long-polling", Channels: 3, Publishers: 2, Rate: 3, Duration: time.Second, Inflight: 8},
			1, []int{1}, 666666666 * time.Nanosecond, 333333333 * time.Nanosecond, 1, 0},
		{Config{Transport: "websocket", Channels: 1, Publishers: 3, Inflight: 1}, 2, []int{0}, 0, 0, 0, 1},
	}
	for i, c := range cases {
		p := newPublisher(c.idx, c.cfg)
		if c.channels != nil && fmt.Sprint(p.channels) != fmt.Sprint(c.channels) {
			t.Errorf("case %d: channels %v, want %v", i, p.channels, c.channels)
		}
		if p.interval != c.interval || p.offset != c.offset || p.count != c.count || cap(p.window) != c.window {
			t.Errorf("case %d: interval %v offset %v count %d window %d, want %v %v %d %d",
				i, p.interval, p.offset, p.count, cap(p.window), c.interval, c.offset, c.count, c.window)
		}
	}
}

func TestSubscriberSkipsReplies(t *testing.T) {
	var total, measure atomic.Int64
	s := newSubscriber(0, 1, 10, &total, &measure)
	frame := `[{"channel":"/meta/connect","successful":true},{"channel":"/b/c0","successful":true,"id":"2"},` +
		`{"channel":"/b/c0","data":{"p":0,"s":0,"t":1}},{"channel":"/b/c0","data":{"p":0,"s":0,"t":1}},` +
		`{"channel":"/b/c0","data":{"p":0,"s":2,"t":1}},{"channel":"/b/c0","data":{"p":0,"s":1,"t":1}},{"channel":"/b/c0","data":"x"}]`
	if err := scanMessages([]byte(frame), s.onMsg); err != nil {
		t.Fatal(err)
	}
	if s.delivered != 5 || s.unique != 3 || s.dup != 1 || s.ooo != 1 || s.bad != 1 || total.Load() != 3 {
		t.Errorf("delivered %d unique %d dup %d ooo %d bad %d total %d, want 5 3 1 1 1 3",
			s.delivered, s.unique, s.dup, s.ooo, s.bad, total.Load())
	}
}
