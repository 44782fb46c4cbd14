package engine

import (
	"context"
	"fmt"
)

// ciphertextColumnOp is a protected column's ciphertext: the bytea column
// <col>_encrypted and the CHECK that whatever is written to it has a
// well-formed envelope header (envelopeCheckSQL). Cleanup keeps both (the
// plaintext's own operation may give the column the plaintext's name; the
// check keeps its name, derived from the plaintext's); rollback drops the
// column, and the check with it.
type ciphertextColumnOp struct {
	t *Target
	c *TargetColumn
}

func (s ciphertextColumnOp) Describe() string {
	return fmt.Sprintf("ciphertext %s.%s: column %s with its envelope check", s.t.QualifiedName(), s.c.Name, s.c.Encrypted)
}

func (ciphertextColumnOp) Stage() Stage { return StageExpand }

func (s ciphertextColumnOp) Apply(ctx context.Context, o *opTx) error {
	stmts := append([]string{fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s bytea", s.t.Ident(), ident(s.c.Encrypted))},
		s.t.envelopeCheckSQL(s.c)...)
	return o.exec(ctx, stmts...)
}

// Cleanup: the ciphertext is what stays.
func (ciphertextColumnOp) Cleanup(context.Context, *opTx) error { return nil }

func (s ciphertextColumnOp) Rollback(ctx context.Context, o *opTx) error {
	return o.exec(ctx, fmt.Sprintf("ALTER TABLE %s DROP COLUMN IF EXISTS %s", s.t.Ident(), ident(s.c.Encrypted)))
}
