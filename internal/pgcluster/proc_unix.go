//go:build unix

package pgcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// serverOSUser is the OS account the server runs as when we are root:
// initdb and postgres refuse to run as root.
const serverOSUser = "postgres"

// runAs is the OS identity the server processes run as; nil means "as the
// current user".
type runAs struct {
	name     string
	uid, gid int
}

// serverIdentity returns nil when not running as root. As root it returns the
// "postgres" OS user, creating it (useradd --system) if it does not exist.
func serverIdentity() (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(serverOSUser)
	if err != nil {
		var unknown user.UnknownUserError
		if !errors.As(err, &unknown) {
			return nil, fmt.Errorf("pgcluster: running as root: looking up OS user %q: %w", serverOSUser, err)
		}
		if cerr := createServerUser(); cerr != nil {
			// Another process may have created it concurrently.
			if u, err = user.Lookup(serverOSUser); err != nil {
				return nil, cerr
			}
		} else if u, err = user.Lookup(serverOSUser); err != nil {
			return nil, fmt.Errorf("pgcluster: running as root: OS user %q still missing after useradd: %w", serverOSUser, err)
		}
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: OS user %q has non-numeric uid %q", serverOSUser, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("pgcluster: OS user %q has non-numeric gid %q", serverOSUser, u.Gid)
	}
	if uid == 0 {
		return nil, fmt.Errorf("pgcluster: OS user %q has uid 0; PostgreSQL refuses to run as root", serverOSUser)
	}
	return &runAs{name: serverOSUser, uid: uid, gid: gid}, nil
}

func createServerUser() error {
	useradd, err := exec.LookPath("useradd")
	if err != nil {
		return fmt.Errorf("pgcluster: running as root, PostgreSQL refuses to run as root, and there is no %q OS user "+
			"(useradd not found to create it); create the user (e.g. useradd --system %s) or run as a non-root user",
			serverOSUser, serverOSUser)
	}
	args := []string{"--system", "--no-create-home"}
	if _, err := user.LookupGroup(serverOSUser); err == nil {
		args = append(args, "--gid", serverOSUser)
	} else {
		args = append(args, "--user-group")
	}
	args = append(args, serverOSUser)
	if out, err := exec.Command(useradd, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("pgcluster: running as root, PostgreSQL refuses to run as root, and creating OS user %q failed "+
			"(useradd %s: %v: %s); create the user yourself or run as a non-root user",
			serverOSUser, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// apply makes cmd run as r (no-op for nil r).
func (r *runAs) apply(cmd *exec.Cmd) {
	if r == nil {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(r.uid), Gid: uint32(r.gid)}
}

// chown gives path to r (no-op for nil r).
func (r *runAs) chown(path string) error {
	if r == nil {
		return nil
	}
	return os.Chown(path, r.uid, r.gid)
}

// processAlive reports whether pid exists (possibly owned by another user).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A zombie (exited, not yet reaped by its new parent) is not running.
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X') {
			return false
		}
	}
	return true
}

// killProcess sends SIGKILL to pid.
func killProcess(pid int) error {
	return syscall.Kill(pid, syscall.SIGKILL)
}

// traversableByAll reports whether every directory from dir up to / can be
// searched by any user (o+x), so a dropped-privilege server can reach dir.
func traversableByAll(dir string) bool {
	for {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := parentDir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}
