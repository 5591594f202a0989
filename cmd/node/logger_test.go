package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestNewLogger: in both formats a duration is text and an attribute
// holding nil (a nil error) is left out.
func TestNewLogger(t *testing.T) {
	var nilErr error
	tests := []struct {
		format string
		want   []string
		absent []string
	}{
		{"json", []string{`"grace":"1.5s"`, `"err":"boom"`, `"msg":"x"`}, []string{"null", `"ok"`}},
		{"text", []string{`grace=1.5s`, `err=boom`, `msg=x`}, []string{"<nil>", " ok="}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			log := newLogger(&config{LogFormat: tt.format, LogLevel: "info"}, &buf)
			log.Info("x", "grace", 1500*time.Millisecond, "err", errors.New("boom"), "ok", nilErr)
			out := buf.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("%q lacks %s", out, w)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(out, a) {
					t.Errorf("%q has %s", out, a)
				}
			}
		})
	}
}
