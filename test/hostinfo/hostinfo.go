// Package hostinfo reads what the load tests, drills and demo report about
// the machine and the processes they measure, from /proc: a figure means
// little without the CPU it ran on, the load beside it, and what each
// process used.
package hostinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// RSS is a process's resident set size in bytes, from /proc/<pid>/status.
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("rss of pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("rss of pid %d: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("rss of pid %d: no VmRSS (a zombie?)", pid)
}

// ProcCPU is the CPU time (user + system) process pid has used, from
// /proc/<pid>/stat (in clock ticks of 1/100 s, the Linux USER_HZ); 0 when
// unknown.
func ProcCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')') // the command may contain spaces
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14, utime
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15, stime
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// LoadAverage is the 1-minute load average from /proc/loadavg, and its
// first three fields as text.
func LoadAverage() (float64, string, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, "", fmt.Errorf("load average: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return 0, "", fmt.Errorf("load average: unexpected /proc/loadavg %q", b)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, "", fmt.Errorf("load average: %w", err)
	}
	return v, strings.Join(f[:3], " "), nil
}

// LoadAverageText is LoadAverage's text, "?" when unreadable.
func LoadAverageText() string {
	_, s, err := LoadAverage()
	if err != nil {
		return "?"
	}
	return s
}

// CPUModel is the first "model name" of /proc/cpuinfo.
func CPUModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
