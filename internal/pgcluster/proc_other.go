//go:build !unix

package pgcluster

import (
	"os"
	"os/exec"
)

type runAs struct{ uid, gid int }

func serverIdentity() (*runAs, error) { return nil, nil }

func (r *runAs) apply(cmd *exec.Cmd) {}

func (r *runAs) chown(path string) error { return nil }

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	_, err := os.FindProcess(pid)
	return err == nil
}

func killProcess(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

func traversableByAll(dir string) bool { return true }
