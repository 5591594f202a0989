package testproc

import (
	"os"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name string
		line string
		want ProcStat
		err  bool
	}{
		{
			name: "plain",
			line: "4242 (bayeux-node) S 1 4242 4242 0 -1 4194560 1503 0 0 0 250 37 0 0 20 0 9 0 123 0 0",
			want: ProcStat{State: 'S', CPU: 2870 * time.Millisecond},
		},
		{
			name: "command name with spaces and parentheses",
			line: "7 (a) b) T (c) T 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 0 0",
			want: ProcStat{State: 'T', CPU: 70 * time.Millisecond},
		},
		{name: "no command name", line: "7 a S 1", err: true},
		{name: "short", line: "7 (a) S 1 7 7 0", err: true},
		{name: "bad utime", line: "7 (a) S 1 7 7 0 -1 0 0 0 0 0 x 4 0", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tt.line))
			if (err != nil) != tt.err {
				t.Fatalf("err %v, want error %v", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestReadProcStatSelf reads the test process itself: running, and its
// CPU time does not go backwards.
func TestReadProcStatSelf(t *testing.T) {
	a, err := ReadProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if a.State != 'R' && a.State != 'S' {
		t.Errorf("state %q", a.State)
	}
	b, err := ReadProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if b.CPU < a.CPU {
		t.Errorf("CPU went back from %v to %v", a.CPU, b.CPU)
	}
}
