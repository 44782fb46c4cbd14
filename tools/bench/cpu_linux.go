//go:build linux

package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times (100 on every
// Linux architecture Go supports).
const clockTicks = 100

// serverCPU is the CPU time the PostgreSQL server has used so far: the
// postmaster's own and that of its children, live (from /proc) and exited
// (accumulated in the postmaster's cutime and cstime when it reaps them).
// Differences of two readings measure the server's work in between. It
// returns false when /proc cannot tell (another OS user's processes).
func serverCPU(dataDir string) (time.Duration, bool) {
	pidText, err := os.ReadFile(dataDir + "/postmaster.pid")
	if err != nil {
		return 0, false
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(pidText), "\n", 2)[0]))
	if err != nil {
		return 0, false
	}
	fields := func(pid string) []string {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return nil
		}
		// The command name is in parentheses and may hold spaces.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			return nil
		}
		return strings.Fields(s[i+1:]) // fields[0] is field 3 (state)
	}
	num := func(f []string, field int) int64 {
		v, _ := strconv.ParseInt(f[field-3], 10, 64)
		return v
	}
	f := fields(strconv.Itoa(pm))
	if len(f) < 15 {
		return 0, false
	}
	ticks := num(f, 14) + num(f, 15) + num(f, 16) + num(f, 17)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cf := fields(e.Name())
		if len(cf) < 15 || num(cf, 4) != int64(pm) {
			continue
		}
		ticks += num(cf, 14) + num(cf, 15)
	}
	return time.Duration(ticks) * time.Second / clockTicks, true
}
