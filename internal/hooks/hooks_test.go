//go:build unix

package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// script writes an executable shell script into dir and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func identity(s string) string { return s }

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestSuccess(t *testing.T) {
	dir := t.TempDir()
	h := script(t, dir, "ok.sh", `echo "hello $1 $2"; echo "to stderr" >&2`)
	cfg := Config{Hooks: map[Phase][]string{PreValidate: {h + " a  b"}}}
	res, err := cfg.Run(context.Background(), Context{Phase: PreValidate, PlanID: "p1"}, identity)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 {
		t.Fatalf("results: %+v", res)
	}
	r := res[0]
	if r.Phase != PreValidate || r.Command != h || r.ExitCode != 0 || r.Duration <= 0 {
		t.Errorf("result: %+v", r)
	}
	if r.Output != "hello a b\nto stderr\n" {
		t.Errorf("output %q", r.Output)
	}
}

func TestNoHooksAndUnknownPhase(t *testing.T) {
	res, err := Config{}.Run(context.Background(), Context{Phase: PostExecute}, identity)
	if res != nil || err != nil {
		t.Errorf("no hooks: %v, %v", res, err)
	}
	if _, err := (Config{}).Run(context.Background(), Context{Phase: "pre_everything"}, identity); err == nil || errors.Is(err, ErrHookFailed) {
		t.Errorf("unknown phase: %v", err)
	}
}

func TestFailingPreHookStops(t *testing.T) {
	dir := t.TempDir()
	second := filepath.Join(dir, "second-ran")
	fail := script(t, dir, "fail.sh", `echo "refusing"; exit 3`)
	touch := script(t, dir, "touch.sh", `touch "$1"`)
	cfg := Config{Hooks: map[Phase][]string{PreExecute: {fail + " --token=s3cr3t", touch + " " + second}}}
	res, err := cfg.Run(context.Background(), Context{Phase: PreExecute}, identity)
	if !errors.Is(err, ErrHookFailed) {
		t.Fatalf("err = %v, want ErrHookFailed", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, fail) || !strings.Contains(msg, "code 3") || !strings.Contains(msg, "pre_execute") {
		t.Errorf("error should name the phase, the hook and the exit code: %v", err)
	}
	if strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "refusing") {
		t.Errorf("error leaks arguments or output: %v", err)
	}
	if len(res) != 1 || res[0].ExitCode != 3 || res[0].Output != "refusing\n" || strings.Contains(res[0].Command, "s3cr3t") {
		t.Errorf("results: %+v", res)
	}
	if exists(second) {
		t.Error("the second hook ran after the first failed")
	}
}

func TestCannotStart(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable.sh")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{filepath.Join(dir, "missing"), notExec, "   "} {
		cfg := Config{Hooks: map[Phase][]string{PreRollback: {h}}}
		res, err := cfg.Run(context.Background(), Context{Phase: PreRollback}, identity)
		if !errors.Is(err, ErrHookFailed) || len(res) != 1 || res[0].ExitCode != -1 {
			t.Errorf("%q: %+v, %v", h, res, err)
		}
	}
}

// alive reports whether pid runs (zombies count as gone).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !os.IsNotExist(err) || !exists("/proc/self")
	}
	i := bytes.LastIndexByte(b, ')')
	return !(i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X'))
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pids")
	// The shell starts sleep as a child: killing only the shell would
	// leave the sleep running.
	h := script(t, dir, "slow.sh", `sleep 30 & echo "$$ $!" > "$1"; wait`)
	cfg := Config{Hooks: map[Phase][]string{PreCleanup: {h + " " + pidFile}}, Timeout: 300 * time.Millisecond}
	start := time.Now()
	res, err := cfg.Run(context.Background(), Context{Phase: PreCleanup}, identity)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Run took %s with a 300ms timeout", took)
	}
	if !errors.Is(err, ErrHookFailed) || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v, want a timeout wrapping ErrHookFailed", err)
	}
	if len(res) != 1 || res[0].ExitCode != -1 {
		t.Errorf("results: %+v", res)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if len(pids) != 2 {
		t.Fatalf("pid file: %q", b)
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still runs after the timeout", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestContextOnStdin(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "ctx.json")
	h := script(t, dir, "cat.sh", `cat > "$1"`)
	want := Context{
		Phase: OnError, Command: "apply", PlanID: "plan-42", Environment: "production",
		Database: "host=db1 port=5432 dbname=lims", Actor: "alice", Reason: "CHG-1234",
		Tables: []string{"patient", "analysis_result"}, Error: "backfill_failed",
	}
	cfg := Config{Hooks: map[Phase][]string{OnError: {h + " " + out}}}
	if _, err := cfg.Run(context.Background(), want, identity); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var got Context
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	for _, key := range []string{`"phase":"on_error"`, `"plan_id":"plan-42"`, `"tables":[`, `"error":"backfill_failed"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s: %s", key, b)
		}
	}
}

func TestPostHooksAllRun(t *testing.T) {
	dir := t.TempDir()
	third := filepath.Join(dir, "third-ran")
	f1 := script(t, dir, "f1.sh", `exit 1`)
	f2 := script(t, dir, "f2.sh", `exit 2`)
	touch := script(t, dir, "touch.sh", `touch "$1"`)
	for _, phase := range []Phase{PostExecute, OnError, PostCleanup, PostRollback} {
		os.Remove(third)
		cfg := Config{Hooks: map[Phase][]string{phase: {f1, f2, touch + " " + third}}}
		res, err := cfg.Run(context.Background(), Context{Phase: phase}, identity)
		if !errors.Is(err, ErrHookFailed) || !strings.Contains(err.Error(), f1) || !strings.Contains(err.Error(), f2) {
			t.Errorf("%s: err = %v, want both failures", phase, err)
		}
		if len(res) != 3 || res[0].ExitCode != 1 || res[1].ExitCode != 2 || res[2].ExitCode != 0 {
			t.Errorf("%s: results %+v", phase, res)
		}
		if !exists(third) {
			t.Errorf("%s: the hook after the failures did not run", phase)
		}
	}
}

func TestOutputRedactedAndTruncated(t *testing.T) {
	dir := t.TempDir()
	h := script(t, dir, "leak.sh", `echo "patient SSN 123-45-6789 failed"`)
	ssn := regexp.MustCompile(`\d{3}-\d{2}-\d{4}`)
	redact := func(s string) string { return ssn.ReplaceAllString(s, "[REDACTED]") }
	cfg := Config{Hooks: map[Phase][]string{PostExecute: {h}}}
	res, err := cfg.Run(context.Background(), Context{Phase: PostExecute}, redact)
	if err != nil {
		t.Fatal(err)
	}
	if got := res[0].Output; strings.Contains(got, "6789") || !strings.Contains(got, "SSN [REDACTED] failed") {
		t.Errorf("output not redacted: %q", got)
	}

	res, err = cfg.Run(context.Background(), Context{Phase: PostExecute}, nil)
	if err != nil || res[0].Output != "" {
		t.Errorf("nil redact must withhold output: %q, %v", res[0].Output, err)
	}

	// A secret straddling the 4 KiB boundary is redacted before the cut.
	big := script(t, dir, "big.sh", `i=0; while [ $i -lt 4090 ]; do printf x; i=$((i+1)); done; echo " 123-45-6789"; i=0; while [ $i -lt 3000 ]; do printf y; i=$((i+1)); done`)
	cfg = Config{Hooks: map[Phase][]string{PostExecute: {big}}}
	res, err = cfg.Run(context.Background(), Context{Phase: PostExecute}, redact)
	if err != nil {
		t.Fatal(err)
	}
	out := res[0].Output
	if len(out) > MaxOutput || !strings.HasSuffix(out, truncatedMark) || strings.Contains(out, "123-45") {
		t.Errorf("output length %d, suffix %q", len(out), out[max(0, len(out)-40):])
	}
}

func TestCleanEnvironment(t *testing.T) {
	t.Setenv("PGPHI_PASSPHRASE", "correct horse battery staple")
	t.Setenv("PGPASSWORD", "pgsecret")
	t.Setenv("DATABASE_URL", "postgres://u:urlsecret@db/x")
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	h := script(t, dir, "env.sh", `env > "$1"`)
	cfg := Config{Hooks: map[Phase][]string{PreValidate: {h + " " + out}}}
	if _, err := cfg.Run(context.Background(), Context{Phase: PreValidate, PlanID: "plan-7"}, identity); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := string(b)
	for _, secret := range []string{"PGPHI_PASSPHRASE", "correct horse", "PGPASSWORD", "pgsecret", "DATABASE_URL", "urlsecret"} {
		if strings.Contains(env, secret) {
			t.Errorf("hook environment contains %q:\n%s", secret, env)
		}
	}
	for _, want := range []string{"PGPHI_PHASE=pre_validate\n", "PGPHI_PLAN_ID=plan-7\n", "PATH=/usr/bin:/bin\n", "LC_ALL=C\n"} {
		if !strings.Contains(env, want) {
			t.Errorf("hook environment lacks %q:\n%s", want, env)
		}
	}
	// Nothing else than what Run sets (sh adds PWD, SHLVL and _).
	allowed := map[string]bool{"PATH": true, "HOME": true, "LANG": true, "LC_ALL": true, "TZ": true, "PGPHI_PHASE": true, "PGPHI_PLAN_ID": true, "PWD": true, "SHLVL": true, "_": true, "OLDPWD": true}
	for _, line := range strings.Split(strings.TrimSpace(env), "\n") {
		name, _, _ := strings.Cut(line, "=")
		if !allowed[name] {
			t.Errorf("unexpected variable %s in the hook environment", name)
		}
	}
}

func TestCancelledContext(t *testing.T) {
	dir := t.TempDir()
	h := script(t, dir, "slow.sh", `sleep 30`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Config{Hooks: map[Phase][]string{PreExecute: {h}}}.Run(ctx, Context{Phase: PreExecute}, identity)
	if !errors.Is(err, ErrHookFailed) || time.Since(start) > 5*time.Second {
		t.Fatalf("err = %v after %s", err, time.Since(start))
	}
}

// An on_alert hook reads the alert from the JSON context on stdin (the
// threshold, the measured number, the limit, the unit, the table); like
// on_error, its failure does not veto anything.
func TestOnAlertContext(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "ctx.json")
	h := script(t, dir, "alert.sh", `cat > '`+out+`'; exit 3`)
	cfg := Config{Hooks: map[Phase][]string{OnAlert: {h}}}
	if OnAlert.Vetoes() {
		t.Fatal("on_alert vetoes")
	}
	_, err := cfg.Run(context.Background(), Context{Phase: OnAlert, Command: "apply", PlanID: "plan-1",
		Alert: &Alert{Threshold: "storage", Measured: 3e8, Limit: 2e8, Unit: "bytes", Table: "public.patient"}}, identity)
	if !errors.Is(err, ErrHookFailed) {
		t.Fatalf("a failing on_alert hook: %v, want it reported", err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want := `"alert":{"threshold":"storage","measured":300000000,"limit":200000000,"unit":"bytes","table":"public.patient"}`
	if !strings.Contains(string(raw), want) || !strings.Contains(string(raw), `"phase":"on_alert"`) {
		t.Fatalf("context %s\nwant it to contain %s", raw, want)
	}
}
