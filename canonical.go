package pgphi

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgphi/pgphi/envelope"
)

// ErrValue is wrapped by every error about a value that does not fit its
// column: a Go type the column's type cannot take, or a string that is not
// the canonical text of docs/FORMAT.md §2.4. The message names the table,
// the column and the Go type, never the value.
var ErrValue = errors.New("pgphi: value does not fit the column")

// columnType is what canonical encoding needs to know about a column's
// original PostgreSQL type (pgphi.protected_columns.original_type).
type columnType struct {
	vt        envelope.ValueType
	name      string // normalized base type name: "character", "numeric", "real", ...
	scale     int    // numeric(p,s): s; -1 when unconstrained
	precision int    // timestamp(p): p; 6 when not given
	array     bool
}

var typeModifier = regexp.MustCompile(`\(([0-9 ,]+)\)`)

func parseColumnType(original string) columnType {
	t := columnType{vt: envelope.TypeForPostgres(original), scale: -1, precision: 6}
	s := strings.ToLower(strings.TrimSpace(original))
	t.array = strings.HasSuffix(s, "]")
	var mods []int
	if m := typeModifier.FindStringSubmatch(s); m != nil {
		for _, f := range strings.Split(m[1], ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil {
				mods = append(mods, n)
			}
		}
	}
	base := strings.Join(strings.Fields(typeModifier.ReplaceAllString(s, "")), " ")
	base = strings.TrimPrefix(base, "pg_catalog.")
	t.name = base
	switch {
	case t.vt == envelope.TypeNumeric:
		if len(mods) == 2 {
			t.scale = mods[1]
		} else if len(mods) == 1 {
			t.scale = 0
		}
	case t.vt == envelope.TypeTimestamp || t.vt == envelope.TypeTimestampTZ:
		if len(mods) == 1 {
			t.precision = mods[0]
		}
	}
	return t
}

// canonical returns the canonical text (docs/FORMAT.md §2.4) of v for a
// column of type t, exactly as PostgreSQL would print the value stored from
// it in a session with pgphi's settings. where names the column for errors.
func canonical(t columnType, where string, v any) (string, error) {
	bad := func(hint string) error {
		return fmt.Errorf("%w: %s (%s) does not take a Go %T: %s", ErrValue, where, t.name, v, hint)
	}
	notCanon := func(hint string) error {
		return fmt.Errorf("%w: %s (%s): the string is not canonical text (%s)", ErrValue, where, t.name, hint)
	}
	if s, ok := v.(string); ok && (!utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0) {
		return "", notCanon("not valid UTF-8, or contains NUL")
	}
	switch t.vt {
	case envelope.TypeText:
		s, ok := v.(string)
		if !ok {
			return "", bad("give a string")
		}
		if t.name == "character" || t.name == "char" || t.name == "bpchar" {
			// character(n)::text drops trailing blanks.
			s = strings.TrimRight(s, " ")
		}
		return s, nil
	case envelope.TypeInteger:
		lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
		switch t.name {
		case "smallint", "int2":
			lo, hi = math.MinInt16, math.MaxInt16
		case "integer", "int", "int4":
			lo, hi = math.MinInt32, math.MaxInt32
		}
		n, ok, err := toInt64(v)
		if err != nil {
			return "", bad("out of range")
		}
		if !ok {
			s, isStr := v.(string)
			if !isStr {
				return "", bad("give an integer or its decimal text")
			}
			n, err = strconv.ParseInt(s, 10, 64)
			if err != nil || strconv.FormatInt(n, 10) != s {
				return "", notCanon("decimal digits, '-' for negatives, no '+', no leading zeros")
			}
		}
		if n < lo || n > hi {
			return "", bad("out of range of " + t.name)
		}
		return strconv.FormatInt(n, 10), nil
	case envelope.TypeNumeric:
		return canonicalNumeric(t, v, bad, notCanon)
	case envelope.TypeBoolean:
		switch x := v.(type) {
		case bool:
			return strconv.FormatBool(x), nil
		case string:
			if x == "true" || x == "false" {
				return x, nil
			}
			return "", notCanon("true or false")
		}
		return "", bad("give a bool")
	case envelope.TypeDate:
		switch x := v.(type) {
		case time.Time:
			if y := x.Year(); y < 1 || y > 9999 {
				return "", bad("years 1..9999 only; give BC dates as canonical text")
			}
			return x.Format("2006-01-02"), nil
		case string:
			if x == "infinity" || x == "-infinity" || validDate(strings.TrimSuffix(x, " BC")) {
				return x, nil
			}
			return "", notCanon("YYYY-MM-DD, a real date, optionally ' BC'; or infinity")
		}
		return "", bad("give a time.Time or YYYY-MM-DD")
	case envelope.TypeTimestamp, envelope.TypeTimestampTZ:
		tz := t.vt == envelope.TypeTimestampTZ
		switch x := v.(type) {
		case time.Time:
			if tz {
				x = x.UTC()
			}
			if y := x.Year(); y < 1 || y > 9999 {
				return "", bad("years 1..9999 only")
			}
			step := time.Duration(math.Pow10(9 - min(max(t.precision, 0), 6)))
			if x.Nanosecond()%int(step) != 0 {
				return "", bad(fmt.Sprintf("more fractional digits than the column keeps (%d); PostgreSQL would round it", t.precision))
			}
			s := x.Format("2006-01-02 15:04:05.999999")
			if tz {
				s += "+00"
			}
			return s, nil
		case string:
			re := timestampText
			if tz {
				re = timestamptzText
			}
			m := re.FindStringSubmatch(x)
			if x == "infinity" || x == "-infinity" {
				return x, nil
			}
			if m == nil || !validDate(m[1]) || len(m[2]) > 1+t.precision {
				return "", notCanon("YYYY-MM-DD HH:MM:SS[.f] with 1 to 6 fraction digits, no trailing zero" + map[bool]string{true: ", then +00 (UTC)"}[tz])
			}
			return x, nil
		}
		return "", bad("give a time.Time")
	case envelope.TypeJSON:
		b, ok := jsonBytes(v)
		if !ok {
			return "", bad("give json.RawMessage, []byte or string")
		}
		if !json.Valid(b) || !utf8.Valid(b) {
			return "", notCanon("not valid JSON")
		}
		return string(b), nil
	case envelope.TypeJSONB:
		b, ok := jsonBytes(v)
		if !ok {
			return "", bad("give json.RawMessage, []byte or string")
		}
		s, err := canonicalJSONB(b)
		if err != nil {
			return "", fmt.Errorf("%w: %s (%s): %v", ErrValue, where, t.name, err)
		}
		return s, nil
	case envelope.TypeBytea:
		switch x := v.(type) {
		case []byte:
			return `\x` + hex.EncodeToString(x), nil
		case string:
			if byteaText.MatchString(x) && len(x)%2 == 0 {
				return x, nil
			}
			return "", notCanon(`\x and two lowercase hex digits per byte`)
		}
		return "", bad("give []byte")
	}
	// TypeOther: floats and uuid are checked; every other type takes its
	// canonical text as given.
	if !t.array {
		switch t.name {
		case "double precision", "float8", "real", "float4":
			bits := 64
			if t.name == "real" || t.name == "float4" {
				bits = 32
			}
			switch x := v.(type) {
			case float64:
				if bits == 32 && float64(float32(x)) != x && !math.IsNaN(x) {
					return "", bad("the value is not exactly a float32; give a float32")
				}
				return formatFloat(x, bits), nil
			case float32:
				return formatFloat(float64(x), bits), nil
			case string:
				f, err := strconv.ParseFloat(x, bits)
				if err != nil || formatFloat(f, bits) != x {
					return "", notCanon("shortest exact text, as PostgreSQL prints it")
				}
				return x, nil
			}
			return "", bad("give a float64")
		case "uuid":
			s, ok := v.(string)
			if !ok {
				return "", bad("give its text, lower case with hyphens")
			}
			if !uuidText.MatchString(s) {
				return "", notCanon("8-4-4-4-12 lower-case hex digits")
			}
			return s, nil
		}
	}
	s, ok := v.(string)
	if !ok {
		return "", bad("give the value's canonical text (value::text under pgphi's session settings)")
	}
	return s, nil
}

var (
	timestampText   = regexp.MustCompile(`^([0-9]{4}-[0-9]{2}-[0-9]{2}) [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]*[1-9])?( BC)?$`)
	timestamptzText = regexp.MustCompile(`^([0-9]{4}-[0-9]{2}-[0-9]{2}) [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]*[1-9])?\+00( BC)?$`)
	byteaText       = regexp.MustCompile(`^\\x[0-9a-f]*$`)
	uuidText        = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	numericText     = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.([0-9]+))?$`)
)

func validDate(s string) bool {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return false
	}
	d, err := time.Parse("2006-01-02", s)
	return err == nil && d.Year() >= 1
}

// toInt64 converts Go integer types; ok is false for anything else.
func toInt64(v any) (n int64, ok bool, err error) {
	switch x := v.(type) {
	case int:
		return int64(x), true, nil
	case int8:
		return int64(x), true, nil
	case int16:
		return int64(x), true, nil
	case int32:
		return int64(x), true, nil
	case int64:
		return x, true, nil
	case uint8:
		return int64(x), true, nil
	case uint16:
		return int64(x), true, nil
	case uint32:
		return int64(x), true, nil
	case uint:
		if uint64(x) > math.MaxInt64 {
			return 0, true, errors.New("range")
		}
		return int64(x), true, nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, true, errors.New("range")
		}
		return int64(x), true, nil
	}
	return 0, false, nil
}

func canonicalNumeric(t columnType, v any, bad func(string) error, notCanon func(string) error) (string, error) {
	var s string
	if n, ok, err := toInt64(v); ok {
		if err != nil {
			return "", bad("out of range")
		}
		s = strconv.FormatInt(n, 10)
	} else {
		switch x := v.(type) {
		case float64:
			if math.IsNaN(x) {
				return "NaN", nil
			}
			if math.IsInf(x, 0) {
				return map[bool]string{true: "Infinity", false: "-Infinity"}[x > 0], nil
			}
			s = strconv.FormatFloat(x, 'f', -1, 64)
			if s == "-0" {
				s = "0"
			}
		case string:
			if x == "NaN" || x == "Infinity" || x == "-Infinity" {
				return x, nil
			}
			m := numericText.FindStringSubmatch(x)
			if m == nil || strings.Trim(x, "-0.") == "" && x[0] == '-' {
				return "", notCanon("decimal digits with '.', no exponent, no '+', no leading zeros")
			}
			if t.scale >= 0 && len(m[3]) != t.scale {
				return "", notCanon(fmt.Sprintf("exactly %d digits after the point", t.scale))
			}
			return x, nil
		default:
			return "", bad("give an integer, a float64 or the canonical text")
		}
	}
	if t.scale < 0 {
		return s, nil
	}
	frac := ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		s, frac = s[:i], s[i+1:]
	}
	if len(frac) > t.scale {
		return "", bad(fmt.Sprintf("more than %d digits after the point; PostgreSQL would round it", t.scale))
	}
	frac += strings.Repeat("0", t.scale-len(frac))
	if frac != "" {
		s += "." + frac
	}
	return s, nil
}

// formatFloat prints f as PostgreSQL 12+ does with extra_float_digits > 0:
// the shortest text that reads back exactly, in fixed notation for decimal
// exponents from -4 to 14 (float8) or -4 to 5 (float4), else d.ddde±XX.
func formatFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	e := strconv.FormatFloat(f, 'e', -1, bits)
	i := strings.LastIndexByte(e, 'e')
	exp, _ := strconv.Atoi(e[i+1:])
	limit := 15
	if bits == 32 {
		limit = 6
	}
	if f == 0 || (exp >= -4 && exp < limit) {
		return strconv.FormatFloat(f, 'f', -1, bits)
	}
	return e
}

func jsonBytes(v any) ([]byte, bool) {
	switch x := v.(type) {
	case json.RawMessage:
		return x, true
	case []byte:
		return x, true
	case string:
		return []byte(x), true
	}
	return nil, false
}

// canonicalJSONB prints a JSON document as PostgreSQL's jsonb output does:
// object keys unique (the last wins), sorted shorter first then bytewise,
// separators ": " and ", ", numbers as numeric prints them, strings with
// jsonb's escapes.
func canonicalJSONB(b []byte) (string, error) {
	if !utf8.Valid(b) {
		return "", errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out strings.Builder
	if err := jsonbValue(dec, &out); err != nil {
		return "", err
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", errors.New("not valid JSON")
	}
	return out.String(), nil
}

func jsonbValue(dec *json.Decoder, out *strings.Builder) error {
	tok, err := dec.Token()
	if err != nil {
		return errors.New("not valid JSON")
	}
	switch x := tok.(type) {
	case json.Delim:
		if x == '[' {
			out.WriteByte('[')
			for n := 0; dec.More(); n++ {
				if n > 0 {
					out.WriteString(", ")
				}
				if err := jsonbValue(dec, out); err != nil {
					return err
				}
			}
			dec.Token()
			out.WriteByte(']')
			return nil
		}
		type member struct{ k, v string }
		var ms []member
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return errors.New("not valid JSON")
			}
			k := kt.(string)
			if strings.IndexByte(k, 0) >= 0 {
				return errors.New("jsonb cannot hold \\u0000")
			}
			var v strings.Builder
			if err := jsonbValue(dec, &v); err != nil {
				return err
			}
			if i := slices.IndexFunc(ms, func(m member) bool { return m.k == k }); i >= 0 {
				ms[i].v = v.String()
			} else {
				ms = append(ms, member{k, v.String()})
			}
		}
		dec.Token()
		slices.SortFunc(ms, func(a, b member) int {
			if len(a.k) != len(b.k) {
				return len(a.k) - len(b.k)
			}
			return strings.Compare(a.k, b.k)
		})
		out.WriteByte('{')
		for i, m := range ms {
			if i > 0 {
				out.WriteString(", ")
			}
			jsonbString(out, m.k)
			out.WriteString(": ")
			out.WriteString(m.v)
		}
		out.WriteByte('}')
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return errors.New("jsonb cannot hold \\u0000")
		}
		jsonbString(out, x)
	case json.Number:
		out.WriteString(numericFromJSON(string(x)))
	case bool:
		out.WriteString(strconv.FormatBool(x))
	case nil:
		out.WriteString("null")
	}
	return nil
}

func jsonbString(out *strings.Builder, s string) {
	out.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			out.WriteString(`\"`)
		case '\\':
			out.WriteString(`\\`)
		case '\b':
			out.WriteString(`\b`)
		case '\f':
			out.WriteString(`\f`)
		case '\n':
			out.WriteString(`\n`)
		case '\r':
			out.WriteString(`\r`)
		case '\t':
			out.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(out, `\u%04x`, r)
			} else {
				out.WriteRune(r)
			}
		}
	}
	out.WriteByte('"')
}

// numericFromJSON prints a JSON number as PostgreSQL's numeric does: the
// exponent applied, the scale max(0, fraction digits - exponent) kept.
func numericFromJSON(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	exp := 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		exp, _ = strconv.Atoi(strings.TrimPrefix(s[i+1:], "+"))
		s = s[:i]
	}
	intPart, frac := s, ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		intPart, frac = s[:i], s[i+1:]
	}
	digits := intPart + frac
	point := len(intPart) + exp
	var r string
	switch {
	case point <= 0:
		r = "0." + strings.Repeat("0", -point) + digits
	case point >= len(digits):
		r = digits + strings.Repeat("0", point-len(digits))
	default:
		r = digits[:point] + "." + digits[point:]
	}
	ip, fp, hasFrac := strings.Cut(r, ".")
	ip = strings.TrimLeft(ip, "0")
	if ip == "" {
		ip = "0"
	}
	r = ip
	if hasFrac {
		r += "." + fp
	}
	if neg && strings.Trim(r, "0.") != "" {
		r = "-" + r
	}
	return r
}
