package engine

import (
	"errors"
	"strings"
)

// Op names an operation of the engine that resolves a state an error
// describes. The engine says which operations resolve it; a front end (the
// pgphi command, serve, an application) says how to run them.
type Op string

// The operations an error may name.
const (
	OpPlan     Op = "plan"
	OpApply    Op = "apply"
	OpVerify   Op = "verify"
	OpCleanup  Op = "cleanup"
	OpRollback Op = "rollback"
	OpReindex  Op = "reindex"
)

// NextStep is an error that running Ops, in order, resolves.
type NextStep struct {
	Err error
	Ops []Op
}

func (e *NextStep) Error() string { return e.Err.Error() }
func (e *NextStep) Unwrap() error { return e.Err }

// withNextStep wraps err with the operations that resolve it.
func withNextStep(err error, ops ...Op) error { return &NextStep{Err: err, Ops: ops} }

// NextSteps returns the operations that resolve err (none if it names none).
func NextSteps(err error) []Op {
	var ns *NextStep
	if errors.As(err, &ns) {
		return ns.Ops
	}
	return nil
}

// FormatOps renders ops for a message ("apply, then verify").
func FormatOps(ops []Op, format func(Op) string) string {
	parts := make([]string, len(ops))
	for i, op := range ops {
		parts[i] = format(op)
	}
	return strings.Join(parts, ", then ")
}
