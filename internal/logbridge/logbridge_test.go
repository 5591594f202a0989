package logbridge

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
)

func TestMemberlistLevels(t *testing.T) {
	tests := []struct {
		line, level, msg string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:5000\n", "DEBUG", "Stream connection from=127.0.0.1:5000"},
		{"[INFO] memberlist: Marking node-2 as failed, suspect timeout reached (0 peer confirmations)\n", "INFO", "Marking node-2 as failed, suspect timeout reached (0 peer confirmations)"},
		{"[WARN] memberlist: Was able to connect to node-2 over TCP but UDP probes failed\n", "WARN", "Was able to connect to node-2 over TCP but UDP probes failed"},
		{"[ERR] memberlist: Failed to send ping: write udp: broken pipe\n", "ERROR", "Failed to send ping: write udp: broken pipe"},
		{"no prefix at all\n", "INFO", "no prefix at all"},
	}
	for _, tt := range tests {
		t.Run(tt.level+" "+tt.msg, func(t *testing.T) {
			var buf bytes.Buffer
			l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			Memberlist(l, nil).Print(tt.line)
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
			}
			if rec["level"] != tt.level || rec["msg"] != tt.msg {
				t.Fatalf("got %v, want level %s msg %q", rec, tt.level, tt.msg)
			}
		})
	}
}

// TestMemberlistQuiet: once the node leaves, memberlist's lines (its
// goroutines failing on the sockets Shutdown closed) are DEBUG.
func TestMemberlistQuiet(t *testing.T) {
	var buf bytes.Buffer
	leaving := false
	l := Memberlist(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), func() bool { return leaving })
	l.Print("[ERR] memberlist: Failed to send ping: write udp: use of closed network connection\n")
	leaving = true
	l.Print("[ERR] memberlist: Failed to send ping: write udp: use of closed network connection\n")
	var levels []string
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var rec map[string]any
		if err := dec.Decode(&rec); err != nil {
			t.Fatal(err)
		}
		levels = append(levels, rec["level"].(string))
	}
	if len(levels) != 2 || levels[0] != "ERROR" || levels[1] != "DEBUG" {
		t.Fatalf("levels %v, want [ERROR DEBUG]", levels)
	}
}

func TestMemberlistLevelFilter(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	Memberlist(l, nil).Print("[DEBUG] memberlist: noise")
	if buf.Len() != 0 {
		t.Fatalf("DEBUG line written at INFO: %q", buf.String())
	}
}

func TestRedis(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, nil))
	Redis(l).Printf(context.Background(), "redis: discarding bad PubSub connection: %s\n", "EOF")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
	}
	if rec["level"] != "WARN" || rec["msg"] != "discarding bad PubSub connection: EOF" {
		t.Fatalf("got %v", rec)
	}
}

func TestGRPCLevels(t *testing.T) {
	tests := []struct {
		log   func(*GRPCLogger)
		level string
		msg   string
	}{
		{func(g *GRPCLogger) { g.Infof("[core] [Channel #%d] created", 1) }, "DEBUG", "[Channel #1] created"},
		{func(g *GRPCLogger) { g.Warningln("[core] dial failed") }, "DEBUG", "dial failed"},
		{func(g *GRPCLogger) { g.Errorf("[transport] %s", "broken") }, "ERROR", "broken"},
		{func(g *GRPCLogger) { g.Error("no component") }, "ERROR", "no component"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		g := GRPC(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
		tt.log(g)
		var rec map[string]any
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
		}
		if rec["level"] != tt.level || rec["msg"] != tt.msg {
			t.Errorf("got %v, want %s %q", rec, tt.level, tt.msg)
		}
	}
	var buf bytes.Buffer
	if g := GRPC(slog.New(slog.NewJSONHandler(&buf, nil))); g.V(2) {
		t.Error("verbose gRPC logging enabled at INFO")
	}
}
