package testproc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// userHZ is the kernel's USER_HZ, the unit of utime and stime in
// /proc/PID/stat: 100 on every mainstream Linux architecture (Go cannot
// call sysconf).
const userHZ = 100

// ProcStat is what tests read of a process's /proc/PID/stat.
type ProcStat struct {
	State byte          // R, S, D, T (stopped), Z, ...
	CPU   time.Duration // utime + stime
}

// ReadProcStat reads /proc/pid/stat.
func ReadProcStat(pid int) (ProcStat, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStat{}, err
	}
	s, err := parseProcStat(raw)
	if err != nil {
		return ProcStat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return s, nil
}

// parseProcStat parses a /proc/PID/stat line. The command name (field 2)
// may hold spaces and parentheses, so fields are counted after the last
// ')': state is field 3, utime 14, stime 15.
func parseProcStat(raw []byte) (ProcStat, error) {
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return ProcStat{}, fmt.Errorf("no command name in %q", raw)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 || len(f[0]) != 1 {
		return ProcStat{}, fmt.Errorf("short line %q", raw)
	}
	utime, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return ProcStat{}, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return ProcStat{}, fmt.Errorf("stime: %w", err)
	}
	return ProcStat{State: f[0][0], CPU: time.Duration(utime+stime) * time.Second / userHZ}, nil
}

// CPU returns the CPU time (user + system) the node process has used, in
// steps of 1/USER_HZ (10 ms).
func (n *Node) CPU(t testing.TB) time.Duration {
	t.Helper()
	s, err := ReadProcStat(n.PID())
	if err != nil {
		t.Fatal(err)
	}
	return s.CPU
}
