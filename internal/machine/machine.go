// Package machine describes where a measurement ran: CPUs, memory, load, Go
// and PostgreSQL versions, the server settings that matter and the file
// system of the data directory. The benchmark (bench/) and the fault
// campaign (faults/) print it with their results.
package machine

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Info describes where a run happened.
type Info struct {
	Date       time.Time
	CPUs       int
	CPUModel   string
	Memory     string
	GoVersion  string
	PGVersion  string
	Settings   string // the server settings that matter for the numbers
	Filesystem string // of the data directory
	LoadStart  string // /proc/loadavg when the run started
	LoadEnd    string
}

// Read describes this machine now.
func Read() Info {
	m := Info{Date: time.Now().UTC(), CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: Loadavg()}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), 10, 64); err == nil {
		m.Memory = strconv.FormatFloat(float64(kb)/(1<<20), 'f', 1, 64) + " GiB"
	}
	if m.CPUModel == "" {
		m.CPUModel = "unknown (" + runtime.GOOS + "/" + runtime.GOARCH + ")"
	}
	return m
}

// procField returns the value of the first "name : value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// Loadavg is the 1, 5 and 15 minute load averages, or "n/a".
func Loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "n/a"
	}
	return strings.Join(f[:3], " ")
}

// ReadServer records the server's version, the given settings and the file
// system of its data directory.
func (m *Info) ReadServer(ctx context.Context, conn *pgx.Conn, dataDir string, settings []string) {
	_ = conn.QueryRow(ctx, "SELECT current_setting('server_version')").Scan(&m.PGVersion)
	var parts []string
	for _, s := range settings {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v); err == nil {
			parts = append(parts, s+"="+v)
		}
	}
	m.Settings = strings.Join(parts, ", ")
	m.Filesystem = FSType(dataDir)
}
