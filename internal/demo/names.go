package demo

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// A name as written plus its usual Latin transliterations (used for
// e-mail addresses and, with culture.romanize probability, stored instead of
// the native spelling, which gives e.g. Muhammad / Mohammed / Mohamed).
type name struct {
	s        string
	roman    []string
	explicit bool // roman was given explicitly (non-Latin or diacritics)
}

// names parses entries of the form "Native" or "Native|rom1,rom2".
func names(entries ...string) []name {
	out := make([]name, len(entries))
	for i, e := range entries {
		s, rom, ok := strings.Cut(e, "|")
		out[i].s = s
		if ok {
			out[i].roman = strings.Split(rom, ",")
			out[i].explicit = true
		} else {
			out[i].roman = []string{fold(s)}
		}
	}
	return out
}

// culture is a naming tradition together with the countries its patients'
// phone numbers and identity documents mostly come from.
type culture struct {
	key      string
	weight   int
	male     []name
	female   []name
	surnames []name
	// surnamesF, when set, holds the feminine surname forms (Polish -ska,
	// Russian -ova, Greek -ou) at the same indexes as surnames.
	surnamesF []name
	// middleM / middleF, when set, are used for middle names (patronymics,
	// Vietnamese Văn / Thị); otherwise another given name is used.
	middleM, middleF []name
	middleProb       float64
	// romanize is the probability that a name is stored transliterated.
	romanize float64
	// doubleSurname is the probability of a two-part (Spanish) or
	// hyphenated surname.
	doubleSurname float64
	doubleSep     string
	countries     []string
	countryW      []int
	lang          string // symptom / note language besides English
}

var cultures = []*culture{
	{
		key: "english", weight: 24, middleProb: 0.45, doubleSurname: 0.03, doubleSep: "-",
		countries: []string{"US", "GB", "KE"}, countryW: []int{52, 44, 4},
		male: names("John", "Jon", "Jonathan", "Johnathan", "Jonathon", "Stephen", "Steven", "Stephan",
			"Michael", "Micheal", "David", "James", "Robert", "William", "Thomas", "Christopher", "Kristopher",
			"Daniel", "Matthew", "Mark", "Marc", "Philip", "Phillip", "Sean", "Shaun", "Shawn", "Aaron",
			"Brian", "Bryan", "Geoffrey", "Jeffrey", "Jeffery", "Alan", "Allan", "Allen", "Eric", "Erik",
			"Carl", "Karl", "Neil", "Neal", "Conor", "Connor", "Liam", "Patrick", "Jack", "Peter", "Paul"),
		female: names("Jane", "Jean", "June", "Joan", "Joanne", "Joanna", "Catherine", "Katherine",
			"Kathryn", "Kathrine", "Cathryn", "Kate", "Ann", "Anne", "Anna", "Hannah", "Sarah", "Sara",
			"Claire", "Clare", "Rebecca", "Rebekah", "Elizabeth", "Elisabeth", "Lisa", "Mary", "Marie",
			"Emily", "Emma", "Megan", "Meghan", "Caitlin", "Kaitlyn", "Siobhan", "Aoife", "Zoe", "Zoë",
			"Chloe", "Sophie", "Jennifer", "Jenifer", "Ashley", "Ashleigh"),
		surnames: names("Smith", "Smyth", "Smithe", "Schmidt", "Jones", "Johnson", "Jonson", "Johnston",
			"Johnstone", "Brown", "Browne", "Taylor", "Tayler", "Thompson", "Thomson", "Tomson", "Reid", "Reed",
			"Read", "Clark", "Clarke", "Wright", "White", "Whyte", "O'Brien", "O'Neil", "O'Neill",
			"O'Connor", "O'Sullivan", "McDonald", "MacDonald", "Macdonald", "D'Arcy", "Davies", "Davis",
			"Williams", "Williamson", "Green", "Greene", "Baker", "Fitzgerald", "Hughes", "Evans",
			"Stephens", "Stevens", "Philips", "Phillips", "Anderson", "Harris", "Harries", "Meyer",
			"Catherwood", "Knight", "Night", "Smith-Jones", "Taylor-Brown", "Bowes-Lyon"),
	},
	{
		key: "eastafrican", weight: 14, middleProb: 0.55, lang: "sw",
		countries: []string{"KE", "UG"}, countryW: []int{60, 40},
		male: names("Otieno", "Odhiambo", "Kamau", "Mwangi", "Kipchoge", "Kiprop", "Wafula", "Okello",
			"Mugisha", "Ssemakula", "Baraka", "Juma", "Emmanuel", "Brian", "Kevin", "Dennis", "Collins",
			"Peter", "Joseph", "John", "Jon", "Moses", "Isaac", "Geoffrey", "Godfrey"),
		female: names("Wanjiru", "Achieng", "Akinyi", "Atieno", "Njeri", "Nakato", "Nakimuli", "Auma",
			"Faith", "Mercy", "Grace", "Esther", "Purity", "Winnie", "Nalubega", "Jane", "Joan", "Catherine",
			"Cathrine", "Nafula", "Wambui"),
		surnames: names("Otieno", "Ochieng", "Odhiambo", "Kamau", "Mwangi", "Njoroge", "Wanjiku", "Kiprono",
			"Cheruiyot", "Wafula", "Wekesa", "Okello", "Okelo", "Mugisha", "Namukasa", "Ssempala", "Sempala",
			"Kato", "Mutua", "Musyoka", "Omondi", "Onyango", "Ouma", "Auma", "Nabwire", "Kariuki"),
	},
	{
		key: "southafrican", weight: 6, middleProb: 0.5,
		countries: []string{"ZA"}, countryW: []int{1},
		male: names("Thabo", "Sipho", "Mandla", "Themba", "Bongani", "Pieter", "Johan", "Sizwe", "Lwazi",
			"Jacobus", "Tshepo", "Kagiso"),
		female: names("Naledi", "Nomvula", "Thandiwe", "Thandeka", "Zanele", "Lindiwe", "Nomsa", "Anri",
			"Elna", "Lerato", "Palesa"),
		surnames: names("Nkosi", "Dlamini", "Ndlovu", "Khumalo", "Mokoena", "Mthembu", "van der Merwe",
			"Van der Merwe", "Botha", "du Plessis", "Du Plessis", "Pretorius", "Naidoo", "Pillay",
			"Mahlangu", "Nel", "Van Wyk"),
	},
	{
		key: "iberian", weight: 10, middleProb: 0.35, doubleSurname: 0.35, doubleSep: " ", lang: "es",
		countries: []string{"ES", "BR", "US"}, countryW: []int{40, 35, 25},
		male: names("José", "Jose", "Juan", "Juan Carlos", "Luis", "Luís", "Carlos", "Jorge", "Javier",
			"Xavier", "Sebastián", "Andrés", "Joaquín", "Ángel", "João", "Gonçalo", "Antônio", "António",
			"Tomás", "Raúl", "Iñaki", "Mateus", "Matías", "Estêvão", "Esteban"),
		female: names("María", "Maria", "María José", "Ana", "Lucía", "Inés", "Sofía", "Begoña",
			"Conceição", "Maria da Conceição", "Fernanda", "Beatriz", "Leticia", "Letícia", "Mónica",
			"Ximena", "Jimena", "Graça", "Iolanda", "Yolanda", "Juana", "Joana"),
		surnames: names("García", "Garcia", "Núñez", "Nunez", "Muñoz", "Martínez", "Rodríguez",
			"Fernández", "López", "Pérez", "Gómez", "Sánchez", "Peña", "Ibáñez", "Conceição",
			"da Conceição", "dos Santos", "Gonçalves", "Simões", "Magalhães", "Araújo", "Guimarães",
			"Souza", "Sousa", "Castillo", "Hernández", "Hernandes", "Vázquez", "Vásquez", "Schmidt"),
	},
	{
		key: "french", weight: 6, middleProb: 0.4, lang: "fr",
		countries: []string{"FR", "GB"}, countryW: []int{80, 20},
		male: names("Jean", "Jean-Luc", "Jean-Pierre", "François", "Étienne", "Benoît", "Hervé", "Thierry",
			"Cédric", "Jérôme", "Raphaël", "Noël", "Loïc", "Gaël", "Stéphane", "Philippe", "Mathieu",
			"Matthieu"),
		female: names("Hélène", "Béatrice", "Élodie", "Cécile", "Geneviève", "Françoise", "Chloé", "Zoé",
			"Marie-Hélène", "Anne-Sophie", "Joëlle", "Mélanie", "Océane", "Jeanne", "Léa", "Maëlle",
			"Catherine", "Jeanine"),
		surnames: names("Dubois", "Lefèvre", "Lefebvre", "Lefeuvre", "Bénard", "Gauthier", "Gautier",
			"D'Amour", "L'Heureux", "Lévesque", "Côté", "Béland", "Chevalier", "Fontaine", "Lemaître",
			"Lemaitre", "Girard", "Roussel", "Mercier", "Saint-Pierre", "Bélanger", "Thériault", "Dupont",
			"Dupond", "O'Neil"),
	},
	{
		key: "italian", weight: 3, middleProb: 0.25,
		countries: []string{"IT"}, countryW: []int{1},
		male:     names("Giuseppe", "Giovanni", "Niccolò", "Nicolò", "Luca", "Stefano", "Matteo", "Giacomo"),
		female:   names("Giulia", "Chiara", "Francesca", "Caterina", "Giovanna", "Ilaria"),
		surnames: names("Rossi", "D'Angelo", "D'Amico", "De Luca", "Di Stefano", "Esposito", "Ricci", "Russo", "Dell'Acqua"),
	},
	{
		key: "german", weight: 5, middleProb: 0.35, doubleSurname: 0.04, doubleSep: "-", lang: "de",
		countries: []string{"DE", "GB"}, countryW: []int{90, 10},
		male: names("Jürgen", "Jörg", "Stefan", "Steffen", "Günter", "Günther", "Gunther", "Klaus", "Claus",
			"Uwe", "Björn", "Lukas", "Lucas", "Maximilian", "Tobias", "Matthias", "Johann", "Johannes",
			"Hans-Peter", "Karl-Heinz"),
		female: names("Jutta", "Ursula", "Gisela", "Käthe", "Katharina", "Katarina", "Bärbel", "Sabine",
			"Anke", "Jana", "Johanna", "Lena", "Lea", "Anna-Lena", "Grete", "Ilse"),
		surnames: names("Müller", "Mueller", "Muller", "Möller", "Schmidt", "Schmitt", "Schmid", "Meyer",
			"Meier", "Mayer", "Maier", "Groß", "Gross", "Weiß", "Weiss", "Strauß", "Schäfer", "Schaefer",
			"Schröder", "Schroeder", "Köhler", "Hoffmann", "Hofmann", "Fischer", "Becker", "Wagner",
			"Müller-Lüdenscheidt"),
	},
	{
		key: "nordic", weight: 3, middleProb: 0.3,
		countries: []string{"NO", "DK"}, countryW: []int{50, 50},
		male: names("Søren", "Soren", "Sören", "Åke", "Bjørn", "Björn", "Ørjan", "Lars", "Nils", "Niels",
			"Jens", "Henrik", "Eirik", "Erik", "Magnús", "Jóhann"),
		female: names("Åse", "Åsa", "Ingrid", "Sigrún", "Solveig", "Sølvi", "Kirsten", "Kristin",
			"Kristen", "Astrid", "Märta", "Liv", "Maja", "Hanne", "Þóra|thora"),
		surnames: names("Sørensen", "Sorensen", "Søndergaard", "Åberg", "Ødegaard", "Andersen",
			"Andersson", "Hansen", "Hanssen", "Johansson", "Jóhannsdóttir", "Þórsson|thorsson", "Nyström",
			"Lindqvist", "Lindquist", "Bjørnstad", "Kjær", "Kjaer"),
	},
	{
		key: "polish", weight: 3, middleProb: 0.3, lang: "pl",
		countries: []string{"PL", "GB"}, countryW: []int{80, 20},
		male: names("Łukasz", "Lukasz", "Paweł", "Michał", "Wojciech", "Grzegorz", "Krzysztof",
			"Jędrzej", "Przemysław", "Tomasz", "Piotr", "Bartłomiej", "Stanisław"),
		female: names("Małgorzata", "Agnieszka", "Katarzyna", "Żaneta", "Joanna", "Beata", "Wiesława",
			"Jadwiga", "Ewa", "Zofia", "Bożena"),
		surnames: names("Wójcik", "Nowak", "Kowalski", "Wiśniewski", "Dąbrowski", "Lewandowski",
			"Zieliński", "Szymański", "Woźniak", "Kozłowski", "Jankowski", "Mazur", "Krawczyk",
			"Brzęczyszczykiewicz"),
		surnamesF: names("Wójcik", "Nowak", "Kowalska", "Wiśniewska", "Dąbrowska", "Lewandowska",
			"Zielińska", "Szymańska", "Woźniak", "Kozłowska", "Jankowska", "Mazur", "Krawczyk",
			"Brzęczyszczykiewicz"),
	},
	{
		key: "greek", weight: 2, middleProb: 0.2, romanize: 0.35,
		countries: []string{"GR"}, countryW: []int{1},
		male: names("Γιώργος|Giorgos,Yiorgos,George", "Γιάννης|Giannis,Yannis,Ioannis",
			"Δημήτριος|Dimitrios,Demetrios", "Νίκος|Nikos,Nicos", "Κωνσταντίνος|Konstantinos,Constantine",
			"Χρήστος|Christos,Hristos"),
		female: names("Μαρία|Maria", "Ελένη|Eleni,Helen", "Αικατερίνη|Aikaterini,Katerina,Catherine",
			"Σοφία|Sofia,Sophia", "Δέσποινα|Despoina,Despina"),
		surnames: names("Παπαδόπουλος|Papadopoulos", "Γεωργίου|Georgiou", "Οικονόμου|Oikonomou,Economou",
			"Νικολάου|Nikolaou,Nicolaou", "Παππάς|Pappas"),
		surnamesF: names("Παπαδοπούλου|Papadopoulou", "Γεωργίου|Georgiou", "Οικονόμου|Oikonomou,Economou",
			"Νικολάου|Nikolaou,Nicolaou", "Παππά|Pappa"),
	},
	{
		key: "russian", weight: 3, middleProb: 0.75, romanize: 0.2, lang: "ru",
		countries: []string{"RU", "DE"}, countryW: []int{85, 15},
		male: names("Иван|Ivan", "Пётр|Pyotr,Petr", "Петр|Petr", "Алексей|Aleksei,Alexey",
			"Дмитрий|Dmitry,Dmitri,Dmitrii", "Сергей|Sergei,Sergey", "Николай|Nikolai,Nikolay",
			"Михаил|Mikhail", "Юрий|Yuri,Yury,Iurii"),
		female: names("Анна|Anna", "Мария|Mariya,Maria", "Наталья|Natalya,Natalia", "Наталия|Nataliya",
			"Ольга|Olga", "Татьяна|Tatyana,Tatiana", "Екатерина|Ekaterina,Yekaterina", "Юлия|Yulia,Julia"),
		surnames: names("Петров|Petrov", "Иванов|Ivanov", "Смирнов|Smirnov", "Кузнецов|Kuznetsov",
			"Попов|Popov", "Соколов|Sokolov", "Лебедев|Lebedev", "Волков|Volkov"),
		surnamesF: names("Петрова|Petrova", "Иванова|Ivanova", "Смирнова|Smirnova", "Кузнецова|Kuznetsova",
			"Попова|Popova", "Соколова|Sokolova", "Лебедева|Lebedeva", "Волкова|Volkova"),
		middleM: names("Иванович|Ivanovich", "Петрович|Petrovich", "Сергеевич|Sergeevich",
			"Алексеевич|Alekseevich", "Николаевич|Nikolaevich"),
		middleF: names("Ивановна|Ivanovna", "Петровна|Petrovna", "Сергеевна|Sergeevna",
			"Алексеевна|Alekseevna", "Николаевна|Nikolaevna"),
	},
	{
		key: "chinese", weight: 4, middleProb: 0.02, romanize: 0.25, lang: "zh",
		countries: []string{"CN", "US"}, countryW: []int{80, 20},
		male: names("伟|Wei", "强|Qiang", "磊|Lei", "军|Jun", "洋|Yang", "勇|Yong", "杰|Jie",
			"浩然|Haoran", "子轩|Zixuan"),
		female: names("娜|Na", "静|Jing", "敏|Min", "丽|Li", "秀英|Xiuying", "芳|Fang", "婷|Ting",
			"雨涵|Yuhan"),
		surnames: names("王|Wang", "李|Li,Lee", "张|Zhang,Chang", "刘|Liu", "陈|Chen,Chan", "杨|Yang",
			"黄|Huang,Wong", "赵|Zhao", "吴|Wu", "周|Zhou,Chow", "欧阳|Ouyang"),
	},
	{
		key: "japanese", weight: 2, middleProb: 0.01, romanize: 0.2,
		countries: []string{"JP"}, countryW: []int{1},
		male: names("健|Ken", "翔太|Shota,Shouta", "大輔|Daisuke", "拓也|Takuya", "蓮|Ren"),
		female: names("陽子|Yoko,Youko", "花子|Hanako", "美咲|Misaki", "結衣|Yui", "さくら|Sakura",
			"ゆき|Yuki"),
		surnames: names("佐藤|Sato,Satou", "鈴木|Suzuki", "高橋|Takahashi", "田中|Tanaka",
			"渡辺|Watanabe", "伊藤|Ito,Itou", "山本|Yamamoto", "中村|Nakamura"),
	},
	{
		key: "arabic", weight: 4, middleProb: 0.35, romanize: 0.5, lang: "ar",
		countries: []string{"EG", "SA", "GB"}, countryW: []int{40, 40, 20},
		male: names("محمد|Muhammad,Mohammed,Mohamed,Mohammad", "أحمد|Ahmed,Ahmad", "علي|Ali",
			"عمر|Omar,Umar", "يوسف|Youssef,Yusuf,Yousef", "خالد|Khaled,Khalid", "حسن|Hassan,Hasan"),
		female: names("فاطمة|Fatima,Fatma,Fatimah", "عائشة|Aisha,Aicha,Ayesha", "مريم|Maryam,Mariam",
			"نور|Nour,Noor", "ليلى|Layla,Leila,Laila", "زينب|Zainab,Zeinab"),
		surnames: names("العلي|Al-Ali", "الحسن|Al-Hassan,El-Hassan", "عبد الله|Abdullah,Abdallah",
			"حداد|Haddad", "منصور|Mansour,Mansur", "الشمري|Al-Shammari", "خوري|Khoury,Khouri"),
	},
	{
		key: "indian", weight: 4, middleProb: 0.3, romanize: 0.5, lang: "hi",
		countries: []string{"IN", "GB", "KE"}, countryW: []int{80, 10, 10},
		male: names("राहुल|Rahul", "अमित|Amit", "विजय|Vijay", "अर्जुन|Arjun", "संजय|Sanjay,Sanjai",
			"Venkatesh", "Srinivasan"),
		female: names("प्रिया|Priya", "अंजलि|Anjali,Anjaly", "पूजा|Pooja,Puja", "सुनीता|Sunita,Suneeta",
			"लक्ष्मी|Lakshmi,Laxmi", "Meenakshi"),
		surnames: names("शर्मा|Sharma", "वर्मा|Verma,Varma", "गुप्ता|Gupta", "सिंह|Singh", "पटेल|Patel",
			"कुमार|Kumar", "Venkataraman", "Subramaniam", "Krishnamurthy"),
	},
	{
		key: "vietnamese", weight: 3, middleProb: 0.85, romanize: 0.25, lang: "vi",
		countries: []string{"VN", "US"}, countryW: []int{80, 20},
		male:   names("Minh", "Đức|Duc", "Hùng|Hung", "Tuấn|Tuan", "Quang", "Dũng|Dung"),
		female: names("Lan", "Hương|Huong", "Thảo|Thao", "Ngọc|Ngoc", "Linh", "Phương|Phuong"),
		surnames: names("Nguyễn|Nguyen", "Nguyen", "Trần|Tran", "Lê|Le", "Phạm|Pham", "Hoàng|Hoang",
			"Huỳnh|Huynh", "Võ|Vo", "Đặng|Dang"),
		middleM: names("Văn|Van", "Minh", "Đức|Duc", "Quốc|Quoc"),
		middleF: names("Thị|Thi", "Ngọc|Ngoc", "Thu", "Minh"),
	},
}

var cultureWeights = func() []int {
	w := make([]int, len(cultures))
	for i, c := range cultures {
		w[i] = c.weight
	}
	return w
}()

// foldMap transliterates the accented Latin letters used above to ASCII.
var foldMap = map[rune]string{
	'à': "a", 'á': "a", 'â': "a", 'ã': "a", 'ä': "a", 'å': "a", 'ą': "a", 'æ': "ae",
	'ç': "c", 'ć': "c", 'č': "c", 'đ': "d", 'ð': "d",
	'è': "e", 'é': "e", 'ê': "e", 'ë': "e", 'ę': "e", 'ě': "e",
	'ì': "i", 'í': "i", 'î': "i", 'ï': "i",
	'ł': "l", 'ñ': "n", 'ń': "n",
	'ò': "o", 'ó': "o", 'ô': "o", 'õ': "o", 'ö': "o", 'ø': "o", 'ơ': "o", 'ọ': "o", 'ố': "o",
	'ś': "s", 'š': "s", 'ß': "ss", 'þ': "th",
	'ù': "u", 'ú': "u", 'û': "u", 'ü': "u", 'ư': "u", 'ũ': "u", 'ủ': "u",
	'ý': "y", 'ÿ': "y", 'ź': "z", 'ż': "z", 'ž': "z",
	'ả': "a", 'ạ': "a", 'ấ': "a", 'ầ': "a", 'ễ': "e", 'ệ': "e", 'ị': "i", 'ỳ': "y",
}

// fold lower-cases s and transliterates it to ASCII letters, digits, '.'
// and '-'; other characters (spaces, apostrophes, unknown scripts) are
// dropped.
func fold(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r < utf8.RuneSelf:
			if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '.' {
				b.WriteRune(r)
			}
		default:
			if f, ok := foldMap[r]; ok {
				b.WriteString(f)
			}
		}
	}
	return b.String()
}
