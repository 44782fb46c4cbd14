//go:build !unix

package dbconn

func chownLike(path, ref string) error { return nil }
