// Package audit owns pgphi's tamper-evident audit trail: the record format,
// the hash chain, the append-only table pgphi.audit_log, its JSON-lines
// mirror, signed checkpoints, verification, export and archives.
//
// Every record names who did what, where, when and why — never a data value
// or a search term. Each record carries the SHA-256 hash of its predecessor
// (Prev) and its own hash over a canonical encoding of every other field
// (Hash), so editing, deleting or reordering a stored record is detected by
// Verify at the sequence number where it happened. The encoding is specified
// in FORMAT.md in this directory, so an auditor can recompute every hash with
// independent tools.
//
// Records are written only by pgphi's definer functions (pgphi.audit_append,
// pgphi.audit_refusal), which assign seq, time, prev, the database role and
// the hash themselves: no role has INSERT on the table. Three layers defend
// the trail: the table rejects UPDATE, DELETE and
// TRUNCATE with a trigger (a superuser can disable it); the hash chain makes
// any in-place edit visible; the file mirror and signed checkpoints (Ed25519
// over the head's sequence number and hash, kept by an auditor) make a
// consistent rewrite of the whole chain, or the removal of its newest
// records, visible too.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Events of a command run: one "start" record, then one of the others.
const (
	EventStart   = "start"
	EventSuccess = "success"
	EventFailure = "failure"
	EventRefused = "refused" // refused by policy (access, approval, TLS, validation)
	// EventAlert is an alert threshold a running command crossed, between
	// its start and end records; details hold the threshold, the measured
	// number and its limit.
	EventAlert = "alert"
)

// ZeroHash is the Prev of the first record (Seq 1): 64 zeros.
const ZeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// TimeLayout is the canonical text of Record.Time: UTC, exactly six
// fractional digits, literal "Z".
const TimeLayout = "2006-01-02T15:04:05.000000Z"

// MaxRecordSize bounds the canonical encoding of one record (with its hash).
const MaxRecordSize = 64 << 10

// ErrInvalidRecord is returned by Append for a record it refuses to store;
// the message names the field, never its content.
var ErrInvalidRecord = errors.New("audit: invalid record")

// Actor is who ran a command.
type Actor struct {
	OSUser string // operating system user running pgphi
	DBRole string // effective database role of the caller; assigned by the database (pgphi.audit_append)
	Name   string // configured actor name (config "actor"), e.g. a person
	Host   string // OS host name pgphi ran on
}

// Record is one audit record. Its JSON form (FORMAT.md) has exactly these
// fields, in snake_case; nothing else is ever stored.
type Record struct {
	Seq         int64     // 1, 2, 3, ... assigned by the database (Append)
	Time        time.Time // UTC, microseconds; assigned by Append (database clock)
	Event       string    // EventStart, EventSuccess, EventFailure, EventRefused, EventAlert
	Command     string    // e.g. "apply", "search", "cleanup"
	RunID       string    // shared by the start and end records of one command run (NewRunID)
	PlanID      string
	Actor       Actor
	Environment string
	DBHost      string // host (and port) of the database, never credentials
	DBName      string
	Reason      string   // --reason text: the operator's words; pgphi never puts values here
	Tables      []string // table names
	Columns     []string // column names
	Rows        int64
	DurationMS  int64
	ErrorClass  string            // e.g. "SQLSTATE 23505", "policy: approvals missing"; never a message with values
	Details     map[string]string // small extra facts; keys match [a-z][a-z0-9_.-]{0,63}; callers guarantee no values
	Prev        string            // hex SHA-256 of the previous record (ZeroHash for Seq 1)
	Hash        string            // hex SHA-256 of the canonical encoding without Hash
}

// fieldNames is the exact key set of a record's JSON object, and actorNames
// that of its "actor" object (both in canonical order).
var (
	fieldNames = []string{"actor", "columns", "command", "db_host", "db_name", "details", "duration_ms",
		"environment", "error_class", "event", "hash", "plan_id", "prev", "reason", "rows", "run_id",
		"seq", "tables", "time"}
	actorNames = []string{"db_role", "host", "name", "os_user"}
)

// maxSafeInt is the largest integer every JSON implementation (IEEE double)
// represents exactly; RFC 8785 requires numbers to stay within it.
const maxSafeInt = 1<<53 - 1

// ComputeHash returns the hex SHA-256 of r's canonical encoding without its
// Hash field (FORMAT.md). It does not validate r.
func (r Record) ComputeHash() string {
	sum := sha256.Sum256(r.appendCanonical(nil, false))
	return hex.EncodeToString(sum[:])
}

// CanonicalJSON returns the canonical encoding of r including its Hash: the
// exact bytes of one mirror, export or archive line (without the newline).
func (r Record) CanonicalJSON() []byte {
	return r.appendCanonical(nil, true)
}

// MarshalJSON encodes r canonically (CanonicalJSON).
func (r Record) MarshalJSON() ([]byte, error) {
	return r.CanonicalJSON(), nil
}

// UnmarshalJSON parses a record strictly (ParseRecord).
func (r *Record) UnmarshalJSON(data []byte) error {
	rec, err := ParseRecord(data)
	if err != nil {
		return err
	}
	*r = rec
	return nil
}

// appendCanonical appends r's canonical JSON (RFC 8785 for this schema:
// keys sorted, no whitespace, minimal string escaping, integers).
func (r *Record) appendCanonical(b []byte, withHash bool) []byte {
	b = append(b, `{"actor":{"db_role":`...)
	b = appendString(b, r.Actor.DBRole)
	b = append(b, `,"host":`...)
	b = appendString(b, r.Actor.Host)
	b = append(b, `,"name":`...)
	b = appendString(b, r.Actor.Name)
	b = append(b, `,"os_user":`...)
	b = appendString(b, r.Actor.OSUser)
	b = append(b, `},"columns":`...)
	b = appendStrings(b, r.Columns)
	b = append(b, `,"command":`...)
	b = appendString(b, r.Command)
	b = append(b, `,"db_host":`...)
	b = appendString(b, r.DBHost)
	b = append(b, `,"db_name":`...)
	b = appendString(b, r.DBName)
	b = append(b, `,"details":{`...)
	for i, k := range sortedKeys(r.Details) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		b = appendString(b, r.Details[k])
	}
	b = append(b, `},"duration_ms":`...)
	b = fmt.Appendf(b, "%d", r.DurationMS)
	b = append(b, `,"environment":`...)
	b = appendString(b, r.Environment)
	b = append(b, `,"error_class":`...)
	b = appendString(b, r.ErrorClass)
	b = append(b, `,"event":`...)
	b = appendString(b, r.Event)
	if withHash {
		b = append(b, `,"hash":`...)
		b = appendString(b, r.Hash)
	}
	b = append(b, `,"plan_id":`...)
	b = appendString(b, r.PlanID)
	b = append(b, `,"prev":`...)
	b = appendString(b, r.Prev)
	b = append(b, `,"reason":`...)
	b = appendString(b, r.Reason)
	b = append(b, `,"rows":`...)
	b = fmt.Appendf(b, "%d", r.Rows)
	b = append(b, `,"run_id":`...)
	b = appendString(b, r.RunID)
	b = append(b, `,"seq":`...)
	b = fmt.Appendf(b, "%d", r.Seq)
	b = append(b, `,"tables":`...)
	b = appendStrings(b, r.Tables)
	b = append(b, `,"time":`...)
	b = appendString(b, r.Time.UTC().Format(TimeLayout))
	return append(b, '}')
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Details keys are ASCII (validated), so byte order is RFC 8785's
	// UTF-16 code unit order.
	slices.Sort(keys)
	return keys
}

func appendStrings(b []byte, s []string) []byte {
	b = append(b, '[')
	for i, v := range s {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, v)
	}
	return append(b, ']')
}

// appendString appends s as an RFC 8785 JSON string: '"' and '\' escaped,
// \b \t \n \f \r as two-character escapes, other controls below U+0020 as
// \u00xx (lowercase hex), everything else as literal UTF-8.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// normalize makes nil slices and maps empty and the time UTC microseconds, so
// a record compares equal to its parsed canonical form.
func (r *Record) normalize() {
	r.Time = r.Time.UTC().Truncate(time.Microsecond)
	r.Tables = cloneStrings(r.Tables)
	r.Columns = cloneStrings(r.Columns)
	d := make(map[string]string, len(r.Details))
	for k, v := range r.Details {
		d[k] = v
	}
	r.Details = d
}

func cloneStrings(s []string) []string {
	return append(make([]string, 0, len(s)), s...)
}

// validate checks what Append must refuse: unknown events, text that cannot
// be stored as jsonb (invalid UTF-8, NUL), detail keys outside the allowed
// alphabet, numbers outside the exact JSON range, oversized records.
func (r *Record) validate() error {
	switch r.Event {
	case EventStart, EventSuccess, EventFailure, EventRefused, EventAlert:
	default:
		return fmt.Errorf("%w: event must be start, success, failure, refused or alert", ErrInvalidRecord)
	}
	if r.Command == "" {
		return fmt.Errorf("%w: command is empty", ErrInvalidRecord)
	}
	texts := []struct{ name, v string }{
		{"command", r.Command}, {"run_id", r.RunID}, {"plan_id", r.PlanID},
		{"actor.os_user", r.Actor.OSUser}, {"actor.db_role", r.Actor.DBRole},
		{"actor.name", r.Actor.Name}, {"actor.host", r.Actor.Host},
		{"environment", r.Environment}, {"db_host", r.DBHost}, {"db_name", r.DBName},
		{"reason", r.Reason}, {"error_class", r.ErrorClass},
	}
	for _, t := range texts {
		if err := checkText(t.name, t.v); err != nil {
			return err
		}
	}
	for _, list := range []struct {
		name string
		v    []string
	}{{"tables", r.Tables}, {"columns", r.Columns}} {
		for _, v := range list.v {
			if err := checkText(list.name, v); err != nil {
				return err
			}
		}
	}
	for k, v := range r.Details {
		if !validDetailKey(k) {
			return fmt.Errorf("%w: a details key does not match [a-z][a-z0-9_.-]{0,63}", ErrInvalidRecord)
		}
		if err := checkText("details."+k, v); err != nil {
			return err
		}
	}
	for _, n := range []struct {
		name string
		v    int64
	}{{"rows", r.Rows}, {"duration_ms", r.DurationMS}} {
		if n.v < -maxSafeInt || n.v > maxSafeInt {
			return fmt.Errorf("%w: %s is outside ±(2^53-1)", ErrInvalidRecord, n.name)
		}
	}
	if y := r.Time.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("%w: time is outside years 1-9999", ErrInvalidRecord)
	}
	if n := len(r.appendCanonical(nil, true)) + 64; n > MaxRecordSize {
		return fmt.Errorf("%w: encoded record is larger than %d bytes", ErrInvalidRecord, MaxRecordSize)
	}
	return nil
}

func checkText(name, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidRecord, name)
	}
	if strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("%w: %s contains a NUL character", ErrInvalidRecord, name)
	}
	return nil
}

func validDetailKey(k string) bool {
	if len(k) == 0 || len(k) > 64 || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for i := 1; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// wire is the JSON shape of a record, used only for decoding.
type wire struct {
	Actor struct {
		DBRole string `json:"db_role"`
		Host   string `json:"host"`
		Name   string `json:"name"`
		OSUser string `json:"os_user"`
	} `json:"actor"`
	Columns     []string          `json:"columns"`
	Command     string            `json:"command"`
	DBHost      string            `json:"db_host"`
	DBName      string            `json:"db_name"`
	Details     map[string]string `json:"details"`
	DurationMS  int64             `json:"duration_ms"`
	Environment string            `json:"environment"`
	ErrorClass  string            `json:"error_class"`
	Event       string            `json:"event"`
	Hash        string            `json:"hash"`
	PlanID      string            `json:"plan_id"`
	Prev        string            `json:"prev"`
	Reason      string            `json:"reason"`
	Rows        int64             `json:"rows"`
	RunID       string            `json:"run_id"`
	Seq         int64             `json:"seq"`
	Tables      []string          `json:"tables"`
	Time        string            `json:"time"`
}

// errMalformed is the parse error of ParseRecord; its messages name fields
// and JSON types only, never content.
type errMalformed string

func (e errMalformed) Error() string { return "audit: malformed record: " + string(e) }

// ParseRecord decodes one record from its JSON object strictly: exactly the
// schema's keys (no more, no fewer, none null), the right JSON types, a time
// in canonical form (TimeLayout). It does not check the hash; Verify does.
// Errors never quote content.
func ParseRecord(data []byte) (Record, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return Record{}, errMalformed("not a JSON object")
	}
	if err := checkKeys(top, fieldNames, "record"); err != nil {
		return Record{}, err
	}
	var actor map[string]json.RawMessage
	if err := json.Unmarshal(top["actor"], &actor); err != nil {
		return Record{}, errMalformed("actor is not a JSON object")
	}
	if err := checkKeys(actor, actorNames, "actor"); err != nil {
		return Record{}, err
	}
	var w wire
	if err := json.Unmarshal(data, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Record{}, errMalformed(te.Field + " has the wrong JSON type")
		}
		return Record{}, errMalformed("fields have the wrong JSON types")
	}
	for k := range w.Details {
		if !validDetailKey(k) {
			return Record{}, errMalformed("a details key is outside the allowed alphabet")
		}
	}
	t, err := time.Parse(TimeLayout, w.Time)
	if err != nil || t.Format(TimeLayout) != w.Time {
		return Record{}, errMalformed("time is not in canonical form " + TimeLayout)
	}
	r := Record{
		Seq: w.Seq, Time: t, Event: w.Event, Command: w.Command, RunID: w.RunID, PlanID: w.PlanID,
		Actor:       Actor{OSUser: w.Actor.OSUser, DBRole: w.Actor.DBRole, Name: w.Actor.Name, Host: w.Actor.Host},
		Environment: w.Environment, DBHost: w.DBHost, DBName: w.DBName, Reason: w.Reason,
		Tables: w.Tables, Columns: w.Columns, Rows: w.Rows, DurationMS: w.DurationMS,
		ErrorClass: w.ErrorClass, Details: w.Details, Prev: w.Prev, Hash: w.Hash,
	}
	r.normalize()
	return r, nil
}

var null = []byte("null")

func checkKeys(m map[string]json.RawMessage, want []string, what string) error {
	if len(m) != len(want) {
		return errMalformed(fmt.Sprintf("%s has %d fields, want %d", what, len(m), len(want)))
	}
	for _, k := range want {
		v, ok := m[k]
		if !ok {
			return errMalformed(fmt.Sprintf("%s lacks field %s", what, k))
		}
		if bytes.Equal(bytes.TrimSpace(v), null) {
			return errMalformed(fmt.Sprintf("%s field %s is null", what, k))
		}
	}
	return nil
}

// diffFields names the fields in which a and b differ.
func diffFields(a, b Record) []string {
	var d []string
	add := func(name string, differ bool) {
		if differ {
			d = append(d, name)
		}
	}
	add("seq", a.Seq != b.Seq)
	add("time", !a.Time.Equal(b.Time))
	add("event", a.Event != b.Event)
	add("command", a.Command != b.Command)
	add("run_id", a.RunID != b.RunID)
	add("plan_id", a.PlanID != b.PlanID)
	add("actor", a.Actor != b.Actor)
	add("environment", a.Environment != b.Environment)
	add("db_host", a.DBHost != b.DBHost)
	add("db_name", a.DBName != b.DBName)
	add("reason", a.Reason != b.Reason)
	add("tables", !slices.Equal(a.Tables, b.Tables))
	add("columns", !slices.Equal(a.Columns, b.Columns))
	add("rows", a.Rows != b.Rows)
	add("duration_ms", a.DurationMS != b.DurationMS)
	add("error_class", a.ErrorClass != b.ErrorClass)
	add("details", !bytes.Equal(appendDetails(a.Details), appendDetails(b.Details)))
	add("prev", a.Prev != b.Prev)
	add("hash", a.Hash != b.Hash)
	return d
}

func appendDetails(m map[string]string) []byte {
	var b []byte
	for _, k := range sortedKeys(m) {
		b = appendString(b, k)
		b = appendString(b, m[k])
	}
	return b
}
