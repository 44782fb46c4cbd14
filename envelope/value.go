package envelope

import (
	"fmt"
	"strings"
)

// ValueType is the first byte of a field plaintext. It records which
// PostgreSQL type family the canonical text belongs to, so that a decrypted
// value can be cast back to its column type.
type ValueType byte

// Value types of format version 1. Their byte values are part of the format
// and never change.
const (
	TypeText        ValueType = 1
	TypeInteger     ValueType = 2
	TypeNumeric     ValueType = 3
	TypeBoolean     ValueType = 4
	TypeDate        ValueType = 5
	TypeTimestamp   ValueType = 6
	TypeTimestampTZ ValueType = 7
	TypeJSON        ValueType = 8
	TypeJSONB       ValueType = 9
	TypeBytea       ValueType = 10
	TypeOther       ValueType = 0x7f
)

// known reports whether t is a value type defined by format version 1.
func (t ValueType) known() bool {
	return (t >= TypeText && t <= TypeBytea) || t == TypeOther
}

// String returns the name of t as used in docs/FORMAT.md and the test
// vectors ("text", "integer", ..., "other"), or "ValueType(0xNN)" for bytes
// that are not a version 1 value type.
func (t ValueType) String() string {
	switch t {
	case TypeText:
		return "text"
	case TypeInteger:
		return "integer"
	case TypeNumeric:
		return "numeric"
	case TypeBoolean:
		return "boolean"
	case TypeDate:
		return "date"
	case TypeTimestamp:
		return "timestamp"
	case TypeTimestampTZ:
		return "timestamptz"
	case TypeJSON:
		return "json"
	case TypeJSONB:
		return "jsonb"
	case TypeBytea:
		return "bytea"
	case TypeOther:
		return "other"
	}
	return fmt.Sprintf("ValueType(0x%02x)", byte(t))
}

// Value is a column value in canonical form: the text PostgreSQL produces
// for value::text in a session with TimeZone=UTC, DateStyle='ISO, YMD',
// IntervalStyle=postgres, extra_float_digits=3 and bytea_output=hex. The
// engine guarantees those settings; envelope carries Text unchanged. Text
// must be valid UTF-8. SQL NULL is not a Value.
type Value struct {
	Type ValueType
	Text string
}

// pgTypes maps normalized PostgreSQL type names to value types.
var pgTypes = map[string]ValueType{
	"text":                        TypeText,
	"character varying":           TypeText,
	"varchar":                     TypeText,
	"character":                   TypeText,
	"char":                        TypeText,
	"bpchar":                      TypeText,
	"integer":                     TypeInteger,
	"int":                         TypeInteger,
	"int4":                        TypeInteger,
	"bigint":                      TypeInteger,
	"int8":                        TypeInteger,
	"smallint":                    TypeInteger,
	"int2":                        TypeInteger,
	"numeric":                     TypeNumeric,
	"decimal":                     TypeNumeric,
	"boolean":                     TypeBoolean,
	"bool":                        TypeBoolean,
	"date":                        TypeDate,
	"timestamp":                   TypeTimestamp,
	"timestamp without time zone": TypeTimestamp,
	"timestamptz":                 TypeTimestampTZ,
	"timestamp with time zone":    TypeTimestampTZ,
	"json":                        TypeJSON,
	"jsonb":                       TypeJSONB,
	"bytea":                       TypeBytea,
}

// TypeForPostgres maps a PostgreSQL type name, as printed by format_type()
// or stored in pg_type.typname, to a ValueType. Matching ignores case,
// surrounding and repeated white space, type modifiers such as "(255)" or
// "(10,2)" and a "pg_catalog." prefix, so "character varying(64)",
// "numeric(10, 2)" and "timestamp(3) with time zone" are recognized. Arrays
// ("integer[]", "_int4"), domains, enums, floating point, uuid and every
// other type map to TypeOther.
func TypeForPostgres(pgType string) ValueType {
	if t, ok := pgTypes[normalizePGType(pgType)]; ok {
		return t
	}
	return TypeOther
}

func normalizePGType(s string) string {
	s = strings.ToLower(s)
	// Drop type modifiers: everything between parentheses.
	var b strings.Builder
	b.Grow(len(s))
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '(':
			depth++
		case c == ')':
			if depth > 0 {
				depth--
			}
		case depth == 0:
			b.WriteByte(c)
		}
	}
	s = strings.Join(strings.Fields(b.String()), " ")
	s = strings.TrimPrefix(s, "pg_catalog.")
	return s
}
