package main

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

// machineInfo describes where a run happened.
type machineInfo struct {
	date       time.Time
	cpus       int
	cpuModel   string
	memory     string
	goVersion  string
	pgVersion  string
	settings   string // the server settings that matter for the numbers
	filesystem string // of the data directory
	loadStart  string // /proc/loadavg when the run started
	loadEnd    string
}

func readMachine() machineInfo {
	m := machineInfo{date: time.Now().UTC(), cpus: runtime.NumCPU(), goVersion: runtime.Version(), loadStart: readLoadavg()}
	m.cpuModel = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseInt(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), 10, 64); err == nil {
		m.memory = strconv.FormatFloat(float64(kb)/(1<<20), 'f', 1, 64) + " GiB"
	}
	if m.cpuModel == "" {
		m.cpuModel = "unknown (" + runtime.GOOS + "/" + runtime.GOARCH + ")"
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

func readLoadavg() string {
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

// readServer records the server version and the settings of the run.
func (m *machineInfo) readServer(ctx context.Context, conn *pgx.Conn, dataDir string) {
	_ = conn.QueryRow(ctx, "SELECT current_setting('server_version')").Scan(&m.pgVersion)
	var parts []string
	for _, s := range []string{"fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "max_wal_size", "checkpoint_timeout", "work_mem", "maintenance_work_mem", "jit"} {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v); err == nil {
			parts = append(parts, s+"="+v)
		}
	}
	m.settings = strings.Join(parts, ", ")
	m.filesystem = fsType(dataDir)
}
