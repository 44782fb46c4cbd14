// Independent implementation of pgphi's blind index terms, format version 1,
// written from docs/SEARCH.md, docs/FORMAT.md and phonetic/README.md only,
// with nothing but Node.js's standard library.
//
//   node testdata/independent/search.mjs testdata/search-vectors.json
//
// It recomputes every vector it can and exits 1 on the first disagreement.
// Phone numbers: Node has no libphonenumber, so for valid numbers the E.164,
// last-4 and area messages are taken from the vector (their consistency is
// checked); the "digits:" fallback of other values is recomputed here.
import { createHmac, hkdfSync } from "node:crypto";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

// ---- Keys and terms (SEARCH.md section 1, FORMAT.md section 1.4) ----------

function u32be(n) {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
const lp = (s) => {
  const b = Buffer.from(s, "utf8");
  return Buffer.concat([u32be(b.length), b]);
};

export function blindIndexInfo(table, column, subKind) {
  return Buffer.concat([Buffer.from("pgphi/v1/blind-index", "ascii"), Buffer.from([0]), lp(table), lp(column), lp(subKind)]);
}

export function subKindKey(dataKey, table, column, subKind) {
  return Buffer.from(hkdfSync("sha256", dataKey, Buffer.alloc(0), blindIndexInfo(table, column, subKind), 32));
}

export function tag(subKind) {
  const fixed = {
    exact: 0x01, contains: 0x02, phonetic: 0x03, "phone/e164": 0x04, "phone/last4": 0x05,
    "phone/area": 0x06, "date/day": 0x07, "date/year": 0x08, "date/month": 0x09,
  };
  if (subKind in fixed) return fixed[subKind];
  const m = /^prefix\/([1-9][0-9]?)$/.exec(subKind);
  if (m && Number(m[1]) <= 32) return 0x10 + Number(m[1]);
  throw new Error(`unknown sub-kind ${subKind}`);
}

export function term(key, subKind, bits, msg) {
  const mac = createHmac("sha256", key).update(Buffer.from(msg, "utf8")).digest();
  let v = 0n;
  for (let i = 0; i < 7; i++) v = (v << 8n) | BigInt(mac[i]);
  return (BigInt(tag(subKind)) << 56n) | (v >> BigInt(56 - bits));
}

// ---- Normalization (SEARCH.md section 2) ----------------------------------

const APOSTROPHES = new Set(["\u2019", "\u2018", "\u02bc", "\u00b4", "\u0060", "\u2032"]);
const HYPHENS = new Set(["\u2010", "\u2011", "\u2012", "\u2013", "\u2212"]);
const LETTER_FOLDS = { "\u00f8": "o", "\u00e6": "ae", "\u0153": "oe", "\u0142": "l", "\u0111": "d", "\u00f0": "d", "\u00fe": "th", "\u0127": "h", "\u0131": "i" };
const FOLDED_SCRIPTS = /^[\p{Script=Inherited}\p{Script=Latin}\p{Script=Greek}\p{Script=Cyrillic}\p{Script=Armenian}\p{Script=Hebrew}\p{Script=Arabic}\p{Script=Syriac}]$/u;
const MN = /^\p{Mn}$/u;
const WHITE = /^\p{White_Space}$/u;

// Full case folding (CaseFolding.txt, statuses C and F). JavaScript has no
// case folding function; lower(upper(lower(c))) per code point gives the
// C+F folding for every character except dotless i (U+0131), which has no
// folding (its T mapping is Turkic only) but whose upper case is I.
function caseFold(s) {
  let out = "";
  for (const c of s) {
    out += c === "\u0131" ? c : c.toLowerCase().toUpperCase().toLowerCase();
  }
  return out;
}

function isCherokee(cp) {
  return (cp >= 0x13a0 && cp <= 0x13fd) || (cp >= 0xab70 && cp <= 0xabbf);
}

function keptMark(cp) {
  return cp === 0x3099 || cp === 0x309a || (cp >= 0xfe00 && cp <= 0xfe0f) || (cp >= 0xe0100 && cp <= 0xe01ef);
}

function round(s, foldAccents) {
  let t = "";
  for (const c of s) t += APOSTROPHES.has(c) ? "'" : HYPHENS.has(c) ? "-" : c;
  t = caseFold(t.normalize("NFKC"));
  let u = "";
  for (const c of t) u += isCherokee(c.codePointAt(0)) ? c.toUpperCase() : c;
  t = u.normalize("NFKC");
  if (foldAccents) {
    let f = "";
    for (const c of t.normalize("NFD")) {
      const cp = c.codePointAt(0);
      if (MN.test(c) && FOLDED_SCRIPTS.test(c) && !keptMark(cp)) continue;
      f += LETTER_FOLDS[c] ?? c;
    }
    t = f.normalize("NFC");
  }
  // Trim and collapse White_Space.
  let out = "";
  let pending = false;
  for (const c of t) {
    if (WHITE.test(c)) {
      pending = out.length > 0;
      continue;
    }
    if (pending) out += " ";
    pending = false;
    out += c;
  }
  return out;
}

export function normalize(s, foldAccents) {
  let out = round(s, foldAccents);
  for (let i = 1; i < 5; i++) {
    const next = round(out, foldAccents);
    if (next === out) break;
    out = next;
  }
  return out;
}

const codePoints = (s) => Array.from(s);

// ---- Phonetic words (SEARCH.md section 3) ---------------------------------

export function valueWords(folded) {
  const out = [];
  const add = (w) => {
    if (w !== "" && !out.includes(w)) out.push(w);
  };
  for (const token of folded.match(/[\p{L}\p{M}']+/gu) ?? []) {
    add(token.replaceAll("'", ""));
    if (token.includes("'")) {
      for (const part of token.split("'")) if (codePoints(part).length >= 2) add(part);
    }
  }
  return out;
}

// ---- Double Metaphone (phonetic/README.md, "The rules, exactly") ----------

export function doubleMetaphone(word) {
  if (word === "") return ["", ""];
  const s = [];
  for (const c of word) {
    if (c.length === 1 && c.charCodeAt(0) < 0x80) s.push(c >= "a" && c <= "z" ? c.toUpperCase() : c);
    else if (c === "Ç" || c === "ç") s.push("Ç");
    else if (c === "Ñ" || c === "ñ") s.push("Ñ");
    else s.push("\u00b7other");
  }
  const n = s.length;
  const last = n - 1;
  for (let i = 0; i < 5; i++) s.push(" ");
  const total = n + 5;
  const at = (i) => (i >= 0 && i < total ? s[i] : undefined);
  const S = (i, len, ...opts) => {
    if (i < 0 || i >= total) return false;
    const end = Math.min(i + len, total);
    if (end - i !== len) return false;
    const sub = s.slice(i, end).join("");
    return opts.includes(sub);
  };
  const V = (i) => i >= 0 && i < n && "AEIOUY".includes(s[i]) && s[i].length === 1;
  const plain = s.slice(0, n).join("");
  const slavo = plain.includes("W") || plain.includes("K") || plain.includes("CZ") || plain.includes("WITZ");
  const germanic = S(0, 4, "VAN ", "VON ") || S(0, 3, "SCH");
  let p = "";
  let a = "";
  const add = (x, y = x) => {
    p += x;
    a += y;
  };
  let cur = 0;
  const skip = (c) => (at(cur + 1) === c ? 2 : 1);
  if (S(0, 2, "GN", "KN", "PN", "WR", "PS")) cur = 1;
  if (at(0) === "X") {
    add("S");
    cur = 1;
  }
  while ((p.length < 4 || a.length < 4) && cur < n) {
    const c = s[cur];
    switch (c) {
      case "A": case "E": case "I": case "O": case "U": case "Y":
        if (cur === 0) add("A");
        cur += 1;
        break;
      case "B":
        add("P");
        cur += skip("B");
        break;
      case "Ç":
        add("S");
        cur += 1;
        break;
      case "C":
        cur = ruleC(cur);
        break;
      case "D":
        if (S(cur, 2, "DG")) {
          if (S(cur + 2, 1, "I", "E", "Y")) {
            add("J");
            cur += 3;
          } else {
            add("TK");
            cur += 2;
          }
        } else if (S(cur, 2, "DT", "DD")) {
          add("T");
          cur += 2;
        } else {
          add("T");
          cur += 1;
        }
        break;
      case "F":
        add("F");
        cur += skip("F");
        break;
      case "G":
        cur = ruleG(cur);
        break;
      case "H":
        if ((cur === 0 || V(cur - 1)) && V(cur + 1)) {
          add("H");
          cur += 2;
        } else cur += 1;
        break;
      case "J":
        cur = ruleJ(cur);
        break;
      case "K":
        add("K");
        cur += skip("K");
        break;
      case "L":
        if (at(cur + 1) === "L") {
          if ((cur === n - 3 && S(cur - 1, 4, "ILLO", "ILLA", "ALLE")) ||
            ((S(last - 1, 2, "AS", "OS") || S(last, 1, "A", "O")) && S(cur - 1, 4, "ALLE"))) {
            add("L", "");
            cur += 2;
            break;
          }
          cur += 2;
          add("L");
        } else {
          cur += 1;
          add("L");
        }
        break;
      case "M":
        add("M");
        cur += (S(cur - 1, 3, "UMB") && (cur + 1 === last || S(cur + 2, 2, "ER"))) || at(cur + 1) === "M" ? 2 : 1;
        break;
      case "N":
        add("N");
        cur += skip("N");
        break;
      case "Ñ":
        add("N");
        cur += 1;
        break;
      case "P":
        if (at(cur + 1) === "H") {
          add("F");
          cur += 2;
        } else {
          add("P");
          cur += S(cur + 1, 1, "P", "B") ? 2 : 1;
        }
        break;
      case "Q":
        add("K");
        cur += skip("Q");
        break;
      case "R":
        if (cur === last && !slavo && S(cur - 2, 2, "IE") && !S(cur - 4, 2, "ME", "MA")) add("", "R");
        else add("R");
        cur += skip("R");
        break;
      case "S":
        cur = ruleS(cur);
        break;
      case "T":
        if (S(cur, 4, "TION")) {
          add("X");
          cur += 3;
        } else if (S(cur, 3, "TIA", "TCH")) {
          add("X");
          cur += 3;
        } else if (S(cur, 2, "TH") || S(cur, 3, "TTH")) {
          if (S(cur + 2, 2, "OM", "AM") || germanic) add("T");
          else add("0", "T");
          cur += 2;
        } else {
          add("T");
          cur += S(cur + 1, 1, "T", "D") ? 2 : 1;
        }
        break;
      case "V":
        add("F");
        cur += skip("V");
        break;
      case "W":
        if (S(cur, 2, "WR")) {
          add("R");
          cur += 2;
          break;
        }
        if (cur === 0 && (V(cur + 1) || S(cur, 2, "WH"))) {
          if (V(cur + 1)) add("A", "F");
          else add("A");
        }
        if ((cur === last && V(cur - 1)) || S(cur - 1, 5, "EWSKI", "EWSKY", "OWSKI", "OWSKY") || S(0, 3, "SCH")) {
          add("", "F");
          cur += 1;
        } else if (S(cur, 4, "WICZ", "WITZ")) {
          add("TS", "FX");
          cur += 4;
        } else cur += 1;
        break;
      case "X":
        if (!(cur === last && (S(cur - 3, 3, "IAU", "EAU") || S(cur - 2, 2, "AU", "OU")))) add("KS");
        cur += S(cur + 1, 1, "C", "X") ? 2 : 1;
        break;
      case "Z":
        if (at(cur + 1) === "H") {
          add("J");
          cur += 2;
          break;
        }
        if (S(cur + 1, 2, "ZO", "ZI", "ZA") || (slavo && cur > 0 && at(cur - 1) !== "T")) add("S", "TS");
        else add("S");
        cur += skip("Z");
        break;
      default:
        cur += 1;
    }
  }
  return [p.slice(0, 4), a.slice(0, 4)];

  function ruleC(cur) {
    if (cur > 1 && !V(cur - 2) && S(cur - 1, 3, "ACH") && at(cur + 2) !== "I" &&
      (at(cur + 2) !== "E" || S(cur - 2, 6, "BACHER", "MACHER"))) {
      add("K");
      return cur + 2;
    }
    if (cur === 0 && S(cur, 6, "CAESAR")) {
      add("S");
      return cur + 2;
    }
    if (S(cur, 4, "CHIA")) {
      add("K");
      return cur + 2;
    }
    if (S(cur, 2, "CH")) {
      if (cur > 0 && S(cur, 4, "CHAE")) {
        add("K", "X");
        return cur + 2;
      }
      if (cur === 0 && (S(cur + 1, 5, "HARAC", "HARIS") || S(cur + 1, 3, "HOR", "HYM", "HIA", "HEM")) && !S(0, 5, "CHORE")) {
        add("K");
        return cur + 2;
      }
      if (germanic || S(cur - 2, 6, "ORCHES", "ARCHIT", "ORCHID") || S(cur + 2, 1, "T", "S") ||
        ((S(cur - 1, 1, "A", "O", "U", "E") || cur === 0) && S(cur + 2, 1, "L", "R", "N", "M", "B", "H", "F", "V", "W", " "))) {
        add("K");
      } else if (cur > 0) {
        if (S(0, 2, "MC")) add("K");
        else add("X", "K");
      } else add("X");
      return cur + 2;
    }
    if (S(cur, 2, "CZ") && !S(cur - 2, 4, "WICZ")) {
      add("S", "X");
      return cur + 2;
    }
    if (S(cur + 1, 3, "CIA")) {
      add("X");
      return cur + 3;
    }
    if (S(cur, 2, "CC") && !(cur === 1 && at(0) === "M")) {
      if (S(cur + 2, 1, "I", "E", "H") && !S(cur + 2, 2, "HU")) {
        if ((cur === 1 && at(0) === "A") || S(cur - 1, 5, "UCCEE", "UCCES")) add("KS");
        else add("X");
        return cur + 3;
      }
      add("K");
      return cur + 2;
    }
    if (S(cur, 2, "CK", "CG", "CQ")) {
      add("K");
      return cur + 2;
    }
    if (S(cur, 2, "CI", "CE", "CY")) {
      if (S(cur, 3, "CIO", "CIE", "CIA")) add("S", "X");
      else add("S");
      return cur + 2;
    }
    add("K");
    if (S(cur + 1, 2, " C", " Q", " G")) return cur + 3;
    if (S(cur + 1, 1, "C", "K", "Q") && !S(cur + 1, 2, "CE", "CI")) return cur + 2;
    return cur + 1;
  }

  function ruleG(cur) {
    if (at(cur + 1) === "H") {
      if (cur > 0 && !V(cur - 1)) add("K");
      else if (cur === 0) add(at(cur + 2) === "I" ? "J" : "K");
      else if ((cur > 1 && S(cur - 2, 1, "B", "H", "D")) || (cur > 2 && S(cur - 3, 1, "B", "H", "D")) || (cur > 3 && S(cur - 4, 1, "B", "H"))) {
        // nothing
      } else if (cur > 2 && at(cur - 1) === "U" && S(cur - 3, 1, "C", "G", "L", "R", "T")) add("F");
      else if (cur > 0 && at(cur - 1) !== "I") add("K");
      return cur + 2;
    }
    if (at(cur + 1) === "N") {
      if (cur === 1 && V(0) && !slavo) add("KN", "N");
      else if (!S(cur + 2, 2, "EY") && !slavo) add("N", "KN");
      else add("KN");
      return cur + 2;
    }
    if (S(cur + 1, 2, "LI") && !slavo) {
      add("KL", "L");
      return cur + 2;
    }
    if (cur === 0 && (at(1) === "Y" || S(1, 2, "ES", "EP", "EB", "EL", "EY", "IB", "IL", "IN", "IE", "EI", "ER"))) {
      add("K", "J");
      return cur + 2;
    }
    if ((S(cur + 1, 2, "ER") || at(cur + 1) === "Y") && !S(0, 6, "DANGER", "RANGER", "MANGER") &&
      !S(cur - 1, 1, "E", "I") && !S(cur - 1, 3, "RGY", "OGY")) {
      add("K", "J");
      return cur + 2;
    }
    if (S(cur + 1, 1, "E", "I", "Y") || S(cur - 1, 4, "AGGI", "OGGI")) {
      if (germanic || S(cur + 1, 2, "ET")) add("K");
      else if (S(cur + 1, 4, "IER ")) add("J");
      else add("J", "K");
      return cur + 2;
    }
    add("K");
    return cur + (at(cur + 1) === "G" ? 2 : 1);
  }

  function ruleJ(cur) {
    if (S(cur, 4, "JOSE") || S(0, 4, "SAN ")) {
      if ((cur === 0 && at(cur + 4) === " ") || S(0, 4, "SAN ")) add("H");
      else add("J", "H");
      return cur + 1;
    }
    if (cur === 0) add("J", "A");
    else if (V(cur - 1) && !slavo && (at(cur + 1) === "A" || at(cur + 1) === "O")) add("J", "H");
    else if (cur === last) add("J", "");
    else if (!S(cur + 1, 1, "L", "T", "K", "S", "N", "M", "B", "Z") && !S(cur - 1, 1, "S", "K", "L")) add("J");
    return cur + (at(cur + 1) === "J" ? 2 : 1);
  }

  function ruleS(cur) {
    if (S(cur - 1, 3, "ISL", "YSL")) return cur + 1;
    if (cur === 0 && S(cur, 5, "SUGAR")) {
      add("X", "S");
      return cur + 1;
    }
    if (S(cur, 2, "SH")) {
      if (S(cur + 1, 4, "HEIM", "HOEK", "HOLM", "HOLZ")) add("S");
      else add("X");
      return cur + 2;
    }
    if (S(cur, 3, "SIO", "SIA") || S(cur, 4, "SIAN")) {
      if (slavo) add("S");
      else add("S", "X");
      return cur + 3;
    }
    if ((cur === 0 && S(cur + 1, 1, "M", "N", "L", "W")) || S(cur + 1, 1, "Z")) {
      add("S", "X");
      return cur + (S(cur + 1, 1, "Z") ? 2 : 1);
    }
    if (S(cur, 2, "SC")) {
      if (at(cur + 2) === "H") {
        if (S(cur + 3, 2, "OO", "ER", "EN", "UY", "ED", "EM")) {
          if (S(cur + 3, 2, "ER", "EN")) add("X", "SK");
          else add("SK");
        } else if (cur === 0 && !V(3) && at(3) !== "W") add("X", "S");
        else add("X");
      } else if (S(cur + 2, 1, "I", "E", "Y")) add("S");
      else add("SK");
      return cur + 3;
    }
    if (cur === last && S(cur - 2, 2, "AI", "OI")) add("", "S");
    else add("S");
    return cur + (S(cur + 1, 1, "S", "Z") ? 2 : 1);
  }
}

// ---- Vowel class and keys (phonetic/README.md) -----------------------------

const AEIOU = (c) => "aeiou".includes(c) && c !== "";

export function vowelClass(word) {
  const w = [];
  for (const c of word) if (/^[A-Za-z]$/.test(c)) w.push(c.toLowerCase());
  const isVowel = (i) => {
    const c = w[i];
    if ("aeio".includes(c)) return true;
    if (c === "y") return !(i === 0 && i + 1 < w.length && AEIOU(w[i + 1]));
    if (c === "u") return !(i > 0 && w[i - 1] === "q" && i + 1 < w.length && (AEIOU(w[i + 1]) || w[i + 1] === "y"));
    return false;
  };
  for (let i = 0; i < w.length; i++) {
    if (!isVowel(i)) continue;
    const v = w[i];
    const next = w[i + 1] ?? "";
    switch (v) {
      case "a": return next === "u" || next === "w" ? "o" : "a";
      case "e": return next === "u" || next === "w" ? "u" : "e";
      case "i": return next === "e" ? "e" : "i";
      case "o": return next === "o" || next === "u" ? "u" : "o";
      case "u": return "u";
      default: return "i";
    }
  }
  return "";
}

export function phoneticKeys(word) {
  const [p, a] = doubleMetaphone(word);
  if (p === "" && a === "") return [];
  const suffix = "/" + vowelClass(word);
  const keys = [];
  if (p !== "") keys.push(p + suffix);
  if (a !== "" && a !== p) keys.push(a + suffix);
  return keys;
}

// ---- Dates (SEARCH.md section 3) -------------------------------------------

function storedDate(v) {
  if (v.endsWith(" BC")) return null;
  if (v.length > 10 && v[10] !== " " && v[10] !== "T") return null;
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v.slice(0, 10));
  if (!m) return null;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const leap = y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days[mo - 1]) return null;
  return { day: m[0], year: m[1], month: `${m[1]}-${m[2]}` };
}

// ---- Phones (SEARCH.md section 3; validity taken from the vector) ----------

function phoneMessages(value, vec, fail) {
  if (vec && vec.valid) {
    if (!/^\+[1-9][0-9]{1,14}$/.test(vec.e164)) fail(`phone e164 ${vec.e164} is not E.164`);
    if (!vec.e164.endsWith(vec.last4) || !/^[0-9]{4}$/.test(vec.last4)) fail(`phone last4 ${vec.last4} is not the end of ${vec.e164}`);
    if (vec.area !== "") {
      const m = /^\+([0-9]{1,3}) ([0-9]+)$/.exec(vec.area);
      if (!m || !vec.e164.startsWith("+" + m[1] + m[2])) fail(`phone area ${vec.area} is not a prefix of ${vec.e164}`);
    }
    return [["phone/e164", vec.e164], ["phone/last4", vec.last4], ["phone/area", vec.area]].filter(([, m]) => m !== "");
  }
  // Not a valid number: the ASCII digits of NFKC(value).
  const digits = value.normalize("NFKC").replace(/[^0-9]/g, "");
  if (digits.length < 4) {
    if (vec) fail(`phone: ${digits.length} digits but the vector has ${JSON.stringify(vec)}`);
    return [];
  }
  if (!vec || vec.e164 !== "digits:" + digits || vec.last4 !== digits.slice(-4) || vec.area !== "") {
    fail(`phone fallback digits:${digits} disagrees with ${JSON.stringify(vec)}`);
  }
  return [["phone/e164", "digits:" + digits], ["phone/last4", digits.slice(-4)]];
}

// ---- A column's terms (SEARCH.md section 3) --------------------------------

export function subKinds(kinds, o) {
  const out = [];
  if (kinds.includes("exact")) out.push("exact");
  if (kinds.includes("prefix")) for (let l = o.prefix_min; l <= o.prefix_max; l++) out.push(`prefix/${l}`);
  if (kinds.includes("contains")) out.push("contains");
  if (kinds.includes("phonetic")) out.push("phonetic");
  if (kinds.includes("phone")) out.push("phone/e164", "phone/last4", "phone/area");
  if (kinds.includes("date")) out.push("date/day", "date/year", "date/month");
  return out;
}

export function storedDateMessages(value) {
  const d = storedDate(value);
  return d ? [["date/day", d.day], ["date/year", d.year], ["date/month", d.month]] : [];
}

// textMessages returns the exact, prefix and contains messages of a value.
export function textMessages(kinds, o, N) {
  const msgs = [];
  const cps = codePoints(N);
  if (kinds.includes("exact") && N !== "") msgs.push(["exact", N]);
  if (kinds.includes("prefix")) {
    for (let l = o.prefix_min; l <= o.prefix_max; l++) if (cps.length >= l) msgs.push([`prefix/${l}`, cps.slice(0, l).join("")]);
  }
  if (kinds.includes("contains")) {
    for (let i = 0; i + o.token_size <= cps.length; i++) msgs.push(["contains", cps.slice(i, i + o.token_size).join("")]);
  }
  return msgs;
}

export function phoneticMessages(value) {
  const msgs = [];
  for (const w of valueWords(normalize(value, true))) for (const k of phoneticKeys(w)) msgs.push(["phonetic", k]);
  return msgs;
}

function valueMessages(col, val, fail) {
  const o = col.options;
  const msgs = [];
  const text = col.kinds.some((k) => ["exact", "prefix", "contains"].includes(k));
  if (text) {
    const N = normalize(val.value, o.fold_accents);
    if (val.normalized !== N) fail(`normalized ${JSON.stringify(N)}, vector ${JSON.stringify(val.normalized)}`);
    const cps = codePoints(N);
    if (col.kinds.includes("exact") && N !== "") msgs.push(["exact", N]);
    if (col.kinds.includes("prefix")) {
      for (let l = o.prefix_min; l <= o.prefix_max; l++) if (cps.length >= l) msgs.push([`prefix/${l}`, cps.slice(0, l).join("")]);
    }
    if (col.kinds.includes("contains")) {
      for (let i = 0; i + o.token_size <= cps.length; i++) msgs.push(["contains", cps.slice(i, i + o.token_size).join("")]);
    }
  }
  if (col.kinds.includes("phonetic")) {
    const words = valueWords(normalize(val.value, true));
    if (JSON.stringify(words) !== JSON.stringify(val.phonetic_words ?? [])) {
      fail(`phonetic words ${JSON.stringify(words)}, vector ${JSON.stringify(val.phonetic_words)}`);
    }
    for (const w of words) for (const k of phoneticKeys(w)) msgs.push(["phonetic", k]);
  }
  if (col.kinds.includes("phone")) msgs.push(...phoneMessages(val.value, val.phone, fail));
  if (col.kinds.includes("date")) {
    const d = storedDate(val.value);
    if (d) msgs.push(["date/day", d.day], ["date/year", d.year], ["date/month", d.month]);
  }
  return msgs;
}

// ---- Checking the vectors --------------------------------------------------

function main() {
  const path = process.argv[2] ?? "testdata/search-vectors.json";
  const v = JSON.parse(readFileSync(path, "utf8"));
  if (v.format_version !== 1) throw new Error(`format_version ${v.format_version}: this implementation knows 1`);
  let checked = 0;
  let failures = 0;
  const report = (where, msg) => {
    failures++;
    if (failures <= 30) console.error(`FAIL ${where}: ${msg}`);
  };

  for (const k of v.key_derivation) {
    const info = blindIndexInfo(k.table, k.column, k.sub_kind).toString("hex");
    if (info !== k.info_hex) report(`key_derivation ${k.sub_kind}`, `info ${info}`);
    const key = subKindKey(Buffer.from(k.data_key_hex, "hex"), k.table, k.column, k.sub_kind).toString("hex");
    if (key !== k.key_hex) report(`key_derivation ${k.sub_kind}`, `key ${key}`);
    checked++;
  }
  for (const n of v.normalize) {
    const where = `normalize ${JSON.stringify(n.input)}`;
    const t = normalize(n.input, true);
    const f = normalize(n.input, false);
    if (t !== n.fold_accents_true) report(where, `fold: ${JSON.stringify(t)} want ${JSON.stringify(n.fold_accents_true)}`);
    if (f !== n.fold_accents_false) report(where, `no fold: ${JSON.stringify(f)} want ${JSON.stringify(n.fold_accents_false)}`);
    const w = valueWords(t);
    if (JSON.stringify(w) !== JSON.stringify(n.phonetic_words ?? [])) report(where, `words ${JSON.stringify(w)} want ${JSON.stringify(n.phonetic_words)}`);
    checked++;
  }
  for (const p of v.phonetic) {
    const [pr, al] = doubleMetaphone(p.word);
    const vc = vowelClass(p.word);
    const keys = phoneticKeys(p.word);
    if (pr !== p.primary || al !== p.alternate || vc !== p.vowel_class || JSON.stringify(keys) !== JSON.stringify(p.keys ?? [])) {
      report(`phonetic ${p.word}`, `got ${pr}/${al} class ${vc} keys ${keys}, want ${p.primary}/${p.alternate} class ${p.vowel_class} keys ${p.keys}`);
    }
    checked++;
  }
  const perKind = {};
  for (const col of v.columns) {
    const dataKey = Buffer.from(col.data_key_hex, "hex");
    const subs = subKinds(col.kinds, col.options);
    if (JSON.stringify([...subs].sort()) !== JSON.stringify(Object.keys(col.bits).sort())) {
      report(col.name, `sub-kinds ${subs} but bits for ${Object.keys(col.bits)}`);
      continue;
    }
    const keys = Object.fromEntries(subs.map((s) => [s, subKindKey(dataKey, col.table, col.column, s)]));
    for (const val of col.values) {
      const where = `${col.name} ${JSON.stringify(val.value)}`;
      let bad = false;
      const fail = (m) => {
        bad = true;
        report(where, m);
      };
      const msgs = valueMessages(col, val, fail);
      const terms = [...new Set(msgs.map(([s, m]) => term(keys[s], s, col.bits[s], m)))].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
      const got = terms.map(String);
      if (JSON.stringify(got) !== JSON.stringify(val.terms)) fail(`terms ${JSON.stringify(got)} want ${JSON.stringify(val.terms)}`);
      for (const m of val.messages ?? []) {
        const t = term(keys[m.sub_kind], m.sub_kind, col.bits[m.sub_kind], m.msg).toString();
        if (t !== m.term) fail(`message ${m.sub_kind} ${JSON.stringify(m.msg)}: term ${t} want ${m.term}`);
      }
      for (const k of col.kinds) {
        perKind[k] ??= { values: 0, failed: 0 };
        perKind[k].values++;
        if (bad) perKind[k].failed++;
      }
      checked++;
    }
  }
  for (const [k, c] of Object.entries(perKind)) {
    console.log(`${k}: ${c.values - c.failed}/${c.values} values agree${k === "phone" ? " (validity and E.164 of valid numbers from the vectors)" : ""}`);
  }
  console.log(`${checked} vectors checked, ${failures} disagreements`);
  process.exit(failures === 0 ? 0 : 1);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) main();
