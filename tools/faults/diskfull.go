//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// diskFullTrial puts the table in a tablespace on a tmpfs a little larger
// than the table, so apply's backfill (which writes a new version of every
// row) fills it; then grows the file system and reruns apply. The second
// return value, when not empty, says why the scenario cannot run here.
func (e *env) diskFullTrial(ctx context.Context, n int) (*trial, string) {
	cmd := commands["apply"]
	c, err := e.connect(ctx, e.t0.name)
	if err != nil {
		return nil, "skipped: " + err.Error()
	}
	tableBytes, err := queryInt(ctx, c, "SELECT pg_table_size('patient')")
	c.Close(context.Background())
	if err != nil {
		return nil, "skipped: " + err.Error()
	}
	const mib = 1 << 20
	small := (tableBytes*5/4 + mib - 1) / mib // MiB: the table and a quarter
	big := (tableBytes*8 + mib - 1) / mib

	dir := filepath.Join(e.dir, fmt.Sprintf("tablespace-%d", n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "skipped: " + err.Error()
	}
	if out, err := exec.CommandContext(ctx, "mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", small), "tmpfs", dir).CombinedOutput(); err != nil {
		return nil, fmt.Sprintf("skipped: cannot mount a small tmpfs here (%v: %s)", err, strings.TrimSpace(string(out)))
	}
	e.tsDir = dir
	defer func() {
		unmount(dir)
		e.tsDir = ""
	}()
	// The server's OS user (postgres when we are root) owns the data directory.
	var st syscall.Stat_t
	if err := syscall.Stat(e.cl.DataDir(), &st); err != nil {
		return nil, "skipped: " + err.Error()
	}
	if err := os.Chown(dir, int(st.Uid), int(st.Gid)); err != nil {
		return nil, "skipped: " + err.Error()
	}
	ts := fmt.Sprintf("faults_small_%d", n)
	if _, err := e.admin.Exec(ctx, fmt.Sprintf("CREATE TABLESPACE %s LOCATION '%s'", ts, dir)); err != nil {
		return nil, "skipped: CREATE TABLESPACE: " + err.Error()
	}
	defer func() {
		if _, err := e.admin.Exec(context.Background(), "DROP TABLESPACE IF EXISTS "+ts); err != nil {
			logf("dropping tablespace %s: %v", ts, err)
		}
	}()

	start := time.Now()
	t, err := e.newTrial(ctx, "disk-full", n, cmd.from(e))
	if err != nil {
		t = &trial{e: e, scenario: "disk-full", n: n, name: fmt.Sprintf("disk-full #%d", n)}
		t.fail("creating the trial database: %v", err)
		return t, ""
	}
	defer func() { t.took = time.Since(start) }()
	defer e.drop(ctx, t.db) // before the tablespace is dropped
	t.fault = fmt.Sprintf("patient in a tablespace on a %d MiB tmpfs (table %d MiB), grown to %d MiB after the failure", small, (tableBytes+mib-1)/mib, big)
	conn, err := e.connect(ctx, t.db)
	if err == nil {
		_, err = conn.Exec(ctx, "ALTER TABLE patient SET TABLESPACE "+ts)
		conn.Close(context.Background())
	}
	if err != nil {
		t.fail("moving patient to the small tablespace: %v", err)
		t.finish(ctx, cmd.final)
		return t, ""
	}
	if r := t.run(ctx, "keys", nil, "keys", "init"); r.code != 0 {
		t.fail("setup pgphi keys init: %s", r.summary())
		t.finish(ctx, cmd.final)
		return t, ""
	}
	// The application sees the full disk too (53100 disk_full).
	if err := t.startWriter(ctx, cmd.mode, "53100"); err != nil {
		t.fail("starting the application writer: %v", err)
	}
	r := t.run(ctx, "apply", nil, "apply")
	switch {
	case r.code == 0:
		t.missed++
		t.note("apply succeeded: the tablespace did not fill up")
	case r.timedOut:
		t.fail("apply hung on a full tablespace")
	default:
		t.injected++
		if !strings.Contains(r.stderr, "space") {
			t.fail("apply on a full tablespace exited %d without saying the disk is full: %s", r.code, r.summary())
		} else {
			t.note("apply stopped during %q: %s", lastStep(r), r.summary())
		}
		if out, err := exec.CommandContext(ctx, "mount", "-o", fmt.Sprintf("remount,size=%dm", big), dir).CombinedOutput(); err != nil {
			t.fail("growing the tmpfs: %v: %s", err, strings.TrimSpace(string(out)))
		}
		t.resume(ctx, "apply", "apply")
	}
	t.finish(ctx, cmd.final)
	return t, ""
}

// unmount removes a mount made by the disk-full scenario (lazily, in case
// the server still has a file open there).
func unmount(dir string) {
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		if out2, err2 := exec.Command("umount", "-l", dir).CombinedOutput(); err2 != nil {
			logf("unmounting %s: %v: %s %s", dir, err, out, out2)
		}
	}
}
