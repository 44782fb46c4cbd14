package demo

// country describes how phone numbers are written in one country. Templates
// are expanded by rng.fill: # a digit, % a non-zero digit, ~ the next byte of
// a prefix chosen from the matching prefix list. Where a country reserves
// numbers for drama / documentation (US 555-01XX, UK Ofcom 07700 900XXX and
// 020 7946 0XXX, France 06 39 98 XX XX and 01 99 00 XX XX, Berlin 030 23125
// XXX, NHS 999 test numbers) those ranges are used; elsewhere numbers are
// random but shaped like real ones.
type country struct {
	mobile      []string
	mobilePfx   []string
	home        []string
	homePfx     []string
	callingCode string
}

var countries = map[string]*country{
	"US": {
		callingCode: "1",
		mobile: []string{"(~~~) 555-01##", "~~~.555.01##", "+1 ~~~ 555 01##", "~~~-555-01##",
			"~~~55501##", "+1~~~55501##", "1-~~~-555-01##", "(~~~) 555 01##"},
		mobilePfx: []string{"415", "212", "312", "617", "206", "303", "713", "202", "646", "305", "404"},
		home:      []string{"(~~~) 555-01##", "~~~-555-01##", "~~~.555.01##", "+1 (~~~) 555-01##"},
		homePfx:   []string{"415", "212", "312", "617", "206", "303", "713", "202"},
	},
	"GB": {
		callingCode: "44",
		mobile:      []string{"07700 900###", "+44 7700 900###", "+447700900###", "07700900###", "+44 (0)7700 900###"},
		home: []string{"020 7946 0###", "+44 20 7946 0###", "(020) 7946 0###", "0161 496 0###",
			"+44 161 496 0###", "0121 496 0###", "01632 960###"},
	},
	"KE": {
		callingCode: "254",
		mobile: []string{"+254 ~~~ ######", "0~~~ ######", "0~~~######", "+254~~~######", "254~~~######",
			"+254-~~~-###-###", "0~~~-###-###"},
		mobilePfx: []string{"712", "722", "733", "701", "710", "721", "727", "745", "790", "795", "110", "115"},
		home:      []string{"020 %######", "+254 20 %######", "057 20#####", "041 2######"},
	},
	"UG": {
		callingCode: "256",
		mobile:      []string{"+256 ~~~ ######", "0~~~ ######", "0~~~######", "+256~~~######", "256 ~~~ ### ###"},
		mobilePfx:   []string{"772", "782", "701", "752", "756", "774", "706", "789"},
		home:        []string{"0414 ######", "+256 414 ######", "0312 ######"},
	},
	"ZA": {
		callingCode: "27",
		mobile:      []string{"+27 ~~ ### ####", "0~~ ### ####", "0~~#######", "+27~~#######", "0~~-###-####"},
		mobilePfx:   []string{"82", "83", "72", "73", "76", "79", "60", "61", "84"},
		home:        []string{"0~~ ### ####", "+27 ~~ ### ####", "(0~~) ###-####"},
		homePfx:     []string{"21", "11", "12", "31", "41"},
	},
	"DE": {
		callingCode: "49",
		mobile: []string{"+49 ~~~ %######", "0~~~ %######", "0~~~/%######", "+49 (0)~~~ %######",
			"0~~~%######", "+49~~~%######"},
		mobilePfx: []string{"151", "152", "157", "160", "170", "171", "172", "175", "176", "177", "178", "179"},
		home:      []string{"030 23125###", "+49 30 23125###", "030/23125###", "(030) 23125 ###", "030 23125-###"},
	},
	"IN": {
		callingCode: "91",
		mobile: []string{"+91 ~#### #####", "0~#### #####", "~#########", "+91-~#########", "+91~#########",
			"+91 ~####-#####"},
		mobilePfx: []string{"9", "8", "7", "6"},
		home:      []string{"011 2### ####", "+91 11 2### ####", "022-2###-####", "080 2### ####"},
	},
	"FR": {
		callingCode: "33",
		mobile:      []string{"06 39 98 ## ##", "+33 6 39 98 ## ##", "0639 98## ##", "063998####", "+3363998####", "06.39.98.##.##"},
		home:        []string{"01 99 00 ## ##", "+33 1 99 00 ## ##", "01.99.00.##.##", "019900####"},
	},
	"ES": {
		callingCode: "34",
		mobile:      []string{"6## ## ## ##", "+34 6## ### ###", "6########", "+34 6## ## ## ##"},
		home:        []string{"91 ### ## ##", "+34 91 ### ## ##", "93 ### ## ##"},
	},
	"BR": {
		callingCode: "55",
		mobile:      []string{"(~~) 9####-####", "+55 ~~ 9####-####", "~~9########", "+55 (~~) 9####-####"},
		mobilePfx:   []string{"11", "21", "31", "41", "51", "61", "71", "81"},
		home:        []string{"(~~) 3###-####", "+55 ~~ 3###-####"},
		homePfx:     []string{"11", "21", "31", "41"},
	},
	"IT": {
		callingCode: "39",
		mobile:      []string{"+39 3~~ ### ####", "3~~ ### ####", "3~~#######", "+39 3~~ #######"},
		mobilePfx:   []string{"12", "20", "27", "33", "35", "38", "40", "47"},
		home:        []string{"06 #### ####", "+39 06 #### ####", "02 #### ####"},
	},
	"CN": {
		callingCode: "86",
		mobile:      []string{"+86 1~~ #### ####", "1~~ #### ####", "1~~########", "+86-1~~-####-####", "+861~~########"},
		mobilePfx:   []string{"38", "39", "36", "58", "59", "86", "88", "35"},
		home:        []string{"010-#### ####", "+86 10 #### ####", "021-####-####"},
	},
	"JP": {
		callingCode: "81",
		mobile:      []string{"0~0-####-####", "+81 ~0-####-####", "+81 ~0 #### ####", "0~0########"},
		mobilePfx:   []string{"9", "8", "7"},
		home:        []string{"03-####-####", "+81 3-####-####", "06-####-####"},
	},
	"RU": {
		callingCode: "7",
		mobile:      []string{"+7 9~~ ###-##-##", "8 (9~~) ###-##-##", "89~~#######", "+79~~#######", "+7 (9~~) ### ## ##"},
		mobilePfx:   []string{"12", "16", "03", "05", "26", "85", "99"},
		home:        []string{"+7 495 ###-##-##", "8 (495) ###-##-##", "8 (812) ###-##-##"},
	},
	"PL": {
		callingCode: "48",
		mobile:      []string{"+48 5## ### ###", "5## ### ###", "5##-###-###", "+48 6## ### ###", "7## ### ###"},
		home:        []string{"22 ### ## ##", "+48 22 ### ## ##", "12 ### ## ##"},
	},
	"GR": {
		callingCode: "30",
		mobile:      []string{"+30 69# ### ####", "69# ### ####", "69########"},
		home:        []string{"210 ### ####", "+30 210 ### ####"},
	},
	"NO": {
		callingCode: "47",
		mobile:      []string{"+47 4## ## ###", "4## ## ###", "4#######", "+47 9## ## ###"},
		home:        []string{"22 ## ## ##", "+47 22 ## ## ##"},
	},
	"DK": {
		callingCode: "45",
		mobile:      []string{"+45 2# ## ## ##", "2# ## ## ##", "2#######", "+45 3# ## ## ##"},
		home:        []string{"33 ## ## ##", "+45 33 ## ## ##"},
	},
	"VN": {
		callingCode: "84",
		mobile:      []string{"+84 9~ ### ## ##", "09~ ### ####", "09~#######", "+849~#######"},
		mobilePfx:   []string{"1", "3", "4", "6", "8"},
		home:        []string{"024 3### ####", "+84 24 3### ####", "028 3### ####"},
	},
	"EG": {
		callingCode: "20",
		mobile:      []string{"+20 1~ #### ####", "01~ #### ####", "01~########", "+201~########"},
		mobilePfx:   []string{"0", "1", "2", "5"},
		home:        []string{"02 #### ####", "+20 2 #### ####"},
	},
	"SA": {
		callingCode: "966",
		mobile:      []string{"+966 5~ ### ####", "05~ ### ####", "05~#######", "+9665~#######"},
		mobilePfx:   []string{"0", "3", "4", "5", "6"},
		home:        []string{"011 ### ####", "+966 11 ### ####"},
	},
}

// countryCodes lists countries in a fixed order so random picks are
// deterministic (map iteration order is not).
var countryCodes = []string{"US", "GB", "KE", "UG", "ZA", "DE", "IN", "FR", "ES", "BR", "IT", "CN",
	"JP", "RU", "PL", "GR", "NO", "DK", "VN", "EG", "SA"}

// invalidPhones are the kind of junk that ends up in phone fields.
var invalidPhones = []string{"12", "n/a", "N/A", "none", "0", "-", "000000000", "unknown", "+", "1234",
	"call clinic", "tbd", "same as above", "07", "+254"}

func (r *rng) phone(cc string, mobile bool) string {
	c := countries[cc]
	tmpl, pfxs := c.mobile, c.mobilePfx
	if !mobile {
		tmpl, pfxs = c.home, c.homePfx
	}
	pfx := ""
	if len(pfxs) > 0 {
		pfx = pick(r, pfxs)
	}
	return r.fill(pick(r, tmpl), pfx)
}
