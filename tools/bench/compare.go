package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pgphi/pgphi/internal/machine"
)

// compareRevisions measures the cost of a change: `pgphi apply` built from
// revision rev and from the working tree, on copies of the same table in the
// same cluster, in alternating rounds (old, new, old, new, ...) so that drift
// of a shared machine falls on both. Baseline A runs first, as the yardstick
// of the machine's speed. The result is a Markdown section of its own.
func compareRevisions(ctx context.Context, o options, rev string) (string, error) {
	e := &env{o: o}
	var err error
	if e.dir, err = os.MkdirTemp("", "pgphi-bench-compare-"); err != nil {
		return "", err
	}
	defer os.RemoveAll(e.dir)
	newBin := filepath.Join(e.dir, "pgphi-new")
	oldBin := filepath.Join(e.dir, "pgphi-old")
	logf("building pgphi from the working tree and from %s", rev)
	if err := goBuild(ctx, ".", newBin); err != nil {
		return "", err
	}
	tree := filepath.Join(e.dir, "old-tree")
	if out, err := exec.CommandContext(ctx, "git", "worktree", "add", "--detach", tree, rev).CombinedOutput(); err != nil {
		return "", fmt.Errorf("git worktree add %s: %v: %s", rev, err, out)
	}
	defer exec.Command("git", "worktree", "remove", "--force", tree).Run()
	if err := goBuild(ctx, tree, oldBin); err != nil {
		return "", err
	}
	var commit string
	if out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", rev).Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}

	e.keyFile = filepath.Join(e.dir, "kek")
	if err := os.WriteFile(e.keyFile, []byte(strings.Repeat("k", 32)), 0o600); err != nil {
		return "", err
	}
	res := &results{patients: o.patients, machine: machine.Read()}
	if err := e.startCluster(ctx, res); err != nil {
		return "", err
	}
	defer e.stop()
	if _, err := e.makeTemplate(ctx, "bench_template", o.patients); err != nil {
		return "", err
	}
	if res.a, err = e.baselineA(ctx); err != nil {
		return "", fmt.Errorf("baseline A: %w", err)
	}
	type sample struct{ old, new []float64 }
	samples := map[string]*sample{searchNone: {}, searchDefault: {}}
	for round := 1; round <= o.rounds; round++ {
		for _, mode := range []string{searchNone, searchDefault} {
			for _, which := range []string{"old", "new"} {
				e.bin = map[string]string{"old": oldBin, "new": newBin}[which]
				name := fmt.Sprintf("round %d, %s, %s", round, modeName(mode), which)
				a := e.apply(ctx, res, name, "bench_template", mode)
				if a.err != nil {
					return "", fmt.Errorf("%s: %w (log: %s)", name, a.err, a.logTail)
				}
				s := samples[mode]
				if which == "old" {
					s.old = append(s.old, a.rate())
				} else {
					s.new = append(s.new, a.rate())
				}
			}
		}
	}
	res.machine.LoadEnd = machine.Loadavg()

	var b strings.Builder
	fmt.Fprintf(&b, "## Cost of a change: %s (%s) against the working tree\n\n", rev, commit)
	fmt.Fprintf(&b, "Command: `%s`; %s; %d patients; %d alternating rounds per binary and mode, each on a fresh copy of the same table in the same cluster, under the concurrent writer. Baseline A (plain UPDATE): %s rows/s.\n\n",
		o.commandLine, time.Now().UTC().Format("2006-01-02 15:04 UTC"), o.patients, o.rounds, fmtRate(res.a.rate()))
	m := res.machine
	fmt.Fprintf(&b, "Machine: %d CPUs (`nproc`), %s, %s, %s; load average at start %s, at end %s; PostgreSQL %s: %s\n\n",
		m.CPUs, m.CPUModel, m.Memory, m.GoVersion, m.LoadStart, m.LoadEnd, m.PGVersion, m.Settings)
	b.WriteString("| apply | before (median rows/s) | after (median rows/s) | after / before | after / baseline A |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, mode := range []string{searchNone, searchDefault} {
		s := samples[mode]
		before, after := median(s.old), median(s.new)
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %.2f |\n", modeName(mode), fmtRate(before), fmtRate(after), after/before, after/res.a.rate())
	}
	b.WriteString("\nEvery sample (rows/s): ")
	for _, mode := range []string{searchNone, searchDefault} {
		fmt.Fprintf(&b, "%s before %v, after %v; ", modeName(mode), rounded(samples[mode].old), rounded(samples[mode].new))
	}
	b.WriteString("\n")
	return b.String(), nil
}

func modeName(mode string) string {
	if mode == searchNone {
		return "no search kinds"
	}
	return "default search kinds"
}

func goBuild(ctx context.Context, dir, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/pgphi")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/pgphi in %s: %w", dir, err)
	}
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func rounded(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x + 0.5)
	}
	return out
}
