package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the kernel's USER_HZ (clock ticks per second in /proc/PID/stat).
// It is 100 on every mainstream Linux architecture; Go cannot call sysconf.
const userHZ = 100

// procSample is CPU and RSS summed over a set of processes.
type procSample struct {
	CPUSeconds float64
	RSSBytes   int64
}

// sampleProcs reads /proc/PID/stat (utime+stime) and /proc/PID/status
// (VmRSS) of every pid and sums them.
func sampleProcs(pids []int) (procSample, error) {
	var s procSample
	for _, pid := range pids {
		cpu, err := procCPU(pid)
		if err != nil {
			return s, err
		}
		rss, err := procRSS(pid)
		if err != nil {
			return s, err
		}
		s.CPUSeconds += cpu
		s.RSSBytes += rss
	}
	return s, nil
}

func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU returns utime+stime in seconds from a /proc/PID/stat line.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted after the last ')': state is field 3, utime 14, stime 15.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc stat line")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc stat line")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad utime/stime in /proc stat line")
	}
	return float64(ut+st) / userHZ, nil
}

func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusRSS(b)
}

// parseStatusRSS returns VmRSS in bytes from /proc/PID/status.
func parseStatusRSS(b []byte) (int64, error) {
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc status")
}

// selfCPU is this process's user+system CPU time.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) time.Duration {
		return time.Duration(t.Sec)*time.Second + time.Duration(t.Usec)*time.Microsecond
	}
	return (tv(ru.Utime) + tv(ru.Stime)).Seconds()
}
