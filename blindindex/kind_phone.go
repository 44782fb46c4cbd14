package blindindex

import "slices"

// phoneKind: the number (E.164, or its digits when not a valid number), its
// last four digits and its area; queries by number, last four or area.
type phoneKind struct{}

func (phoneKind) subKinds(Options) []SubKind {
	return []SubKind{SubPhoneE164, SubPhoneLast4, SubPhoneArea}
}

func (phoneKind) messages(c *Column, v *valueText, emit func(SubKind, string)) {
	p, ok := parsePhone(v.raw, c.opt.PhoneRegion)
	if !ok {
		return
	}
	emit(SubPhoneE164, p.number)
	if p.last4 != "" {
		emit(SubPhoneLast4, p.last4)
	}
	if p.area != "" {
		emit(SubPhoneArea, p.area)
	}
}

func (phoneKind) queryKinds() []QueryKind { return []QueryKind{QPhone, QLast4, QAreaCode} }

func (phoneKind) query(c *Column, q Query) (*Plan, error) {
	switch q.Kind {
	case QPhone:
		p, ok := parsePhone(q.Value, c.opt.PhoneRegion)
		if !ok {
			return nil, invalid("phone query needs a phone number with at least 4 digits")
		}
		// Every row with the same number has its last four and area too.
		groups := [][]int64{{c.termString(SubPhoneE164, p.number)}}
		if p.last4 != "" {
			groups = append(groups, []int64{c.termString(SubPhoneLast4, p.last4)})
		}
		if p.area != "" {
			groups = append(groups, []int64{c.termString(SubPhoneArea, p.area)})
		}
		return c.plan(func(pt string) bool {
			v, ok := parsePhone(pt, c.opt.PhoneRegion)
			return ok && v.number == p.number
		}, groups...), nil

	case QLast4:
		l4, ok := parseLast4(q.Value)
		if !ok {
			return nil, invalid("last4 query needs exactly 4 digits")
		}
		return c.plan(func(pt string) bool {
			v, ok := parsePhone(pt, c.opt.PhoneRegion)
			return ok && v.last4 == l4
		}, []int64{c.termString(SubPhoneLast4, l4)}), nil

	default: // QAreaCode
		areas, ok := parseAreaQuery(q.Value, c.opt.PhoneRegion)
		if !ok {
			return nil, invalid("area-code query needs \"+<country code> <area code>\", or an area code of the default region")
		}
		g := make([]int64, len(areas))
		for i, a := range areas {
			g[i] = c.termString(SubPhoneArea, a)
		}
		return c.plan(func(pt string) bool {
			v, ok := parsePhone(pt, c.opt.PhoneRegion)
			return ok && v.area != "" && slices.Contains(areas, v.area)
		}, g), nil
	}
}

func (phoneKind) measured(*Column) []measuredQuery {
	return []measuredQuery{
		{QPhone, []SubKind{SubPhoneE164, SubPhoneLast4, SubPhoneArea}, true},
		{QLast4, []SubKind{SubPhoneLast4}, false},
		{QAreaCode, []SubKind{SubPhoneArea}, false},
	}
}

// budget: the number (queried with its last four and area) gives up bits
// first; last four and area are queried alone.
func (phoneKind) budget(s SubKind, _ Options) (int, int) {
	switch s {
	case SubPhoneE164:
		return 1, 2
	case SubPhoneLast4:
		return 2, 40
	}
	return 2, 60
}

func (phoneKind) termsPerRow(SubKind, float64, Options) float64 { return 1 }
