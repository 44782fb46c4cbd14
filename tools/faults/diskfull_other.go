//go:build !linux

package main

import "context"

func (e *env) diskFullTrial(context.Context, int) (*trial, string) {
	return nil, "skipped: the disk-full scenario mounts a tmpfs, which needs Linux"
}

func unmount(string) {}
