//! Synthetic recall per encoding variant: takes the dev-split injection rows of the
//! `plain` family that the scanner flags as they are, re-encodes each with this file's
//! own encoders (leetspeak tables, Braille with and without indicators, NATO spelling
//! with its spelling and separator variants) and prints the share still flagged, per
//! variant. The holdout split is never read. A tool for fixing classes of misses
//! rather than single rows.
//!
//! ```sh
//! cargo run --release -p stack-scan --example scan_families -- /work/shared/scan-corpus/dev.jsonl
//! # print up to N misses of one variant:  ... -- CORPUS --show VARIANT N
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use stack_scan::{ScanConfig, Scanner};

#[derive(serde::Deserialize)]
struct Row {
    id: String,
    text: String,
    label: u8,
    #[serde(default)]
    encoding: String,
}

/// The bench's split: FNV-1a of the id, 70 % dev.
fn is_dev(id: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % 100 < 70
}

/// Small deterministic generator (xorshift), seeded per row and variant.
struct Rng(u64);

impl Rng {
    fn new(seed: &str, salt: u64) -> Self {
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ salt;
        for b in seed.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self(h | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        let len = options.len().max(1) as u64;
        options
            .get((self.next() % len) as usize)
            .copied()
            .unwrap_or("")
    }
}

// ------------------------------------------------------------------ leetspeak

/// Substitutions per letter; the first option is the most common one.
fn leet_options(c: char, table: u8) -> &'static [&'static str] {
    match (table, c.to_ascii_lowercase()) {
        // Digits only.
        (0, 'a') => &["4"],
        (0, 'e') => &["3"],
        (0, 'i') => &["1"],
        (0, 'o') => &["0"],
        (0, 's') => &["5"],
        (0, 't') => &["7"],
        (0, 'g') => &["9"],
        (0, 'b') => &["8"],
        (0, 'l') => &["1"],
        (0, 'z') => &["2"],
        // Symbols.
        (1, 'a') => &["@"],
        (1, 's') => &["$"],
        (1, 'i') => &["!"],
        (1, 'l') => &["|"],
        (1, 't') => &["+"],
        (1, 'e') => &["3"],
        (1, 'o') => &["0"],
        // Mixed: any of them.
        (_, 'a') => &["4", "@"],
        (_, 'e') => &["3"],
        (_, 'i') => &["1", "!", "|"],
        (_, 'l') => &["1", "|"],
        (_, 'o') => &["0"],
        (_, 's') => &["5", "$"],
        (_, 't') => &["7", "+"],
        (_, 'g') => &["9", "6"],
        (_, 'b') => &["8"],
        _ => &[],
    }
}

/// Leetspeak with substitution table `table`, each letter substituted with probability
/// `percent`, random case when `mixed_case`.
fn leet(text: &str, table: u8, percent: u64, mixed_case: bool, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let options = leet_options(c, table);
        if !options.is_empty() && rng.chance(percent) {
            out.push_str(rng.pick(options));
        } else if mixed_case && c.is_ascii_alphabetic() && rng.chance(50) {
            if c.is_ascii_lowercase() {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c.to_ascii_lowercase());
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ------------------------------------------------------------------ Braille

fn braille_cell(dots: u32) -> char {
    char::from_u32(0x2800 + dots).unwrap_or(' ')
}

fn braille_letter_dots(c: char) -> Option<u32> {
    const LETTERS: [u32; 26] = [
        0x01, 0x03, 0x09, 0x19, 0x11, 0x0B, 0x1B, 0x13, 0x0A, 0x1A, 0x05, 0x07, 0x0D, 0x1D, 0x15,
        0x0F, 0x1F, 0x17, 0x0E, 0x1E, 0x25, 0x27, 0x3A, 0x2D, 0x3D, 0x35,
    ];
    let lower = c.to_ascii_lowercase();
    lower
        .is_ascii_lowercase()
        .then(|| LETTERS.get((lower as u8 - b'a') as usize).copied())
        .flatten()
}

fn braille_punct_dots(c: char) -> Option<u32> {
    Some(match c {
        ',' => 0x02,
        ';' => 0x06,
        ':' => 0x12,
        '.' => 0x32,
        '!' => 0x16,
        '?' => 0x26,
        '\'' => 0x04,
        '-' => 0x24,
        '"' => 0x36,
        '(' | ')' => 0x36,
        '/' => 0x0C,
        _ => return None,
    })
}

/// Grade-1 Braille. `indicators`: capital (⠠) and number (⠼) signs; `blank`: spaces as
/// the Braille blank U+2800; `punct`: punctuation as cells (else kept as ASCII).
fn braille(text: &str, indicators: bool, blank: bool, punct: bool) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if indicators && !in_number {
                out.push(braille_cell(0x3C));
            }
            in_number = true;
            let letter = if c == '0' {
                'j'
            } else {
                char::from(b'a' + (c as u8 - b'1'))
            };
            out.push(braille_cell(braille_letter_dots(letter).unwrap_or(0)));
            continue;
        }
        in_number = false;
        if let Some(d) = braille_letter_dots(c) {
            if indicators && c.is_ascii_uppercase() {
                out.push(braille_cell(0x20));
            }
            out.push(braille_cell(d));
        } else if c == ' ' {
            out.push(if blank { braille_cell(0) } else { ' ' });
        } else if let (true, Some(d)) = (punct, braille_punct_dots(c)) {
            out.push(braille_cell(d));
        } else {
            out.push(c);
        }
    }
    out
}

// ------------------------------------------------------------------ NATO

const NATO_WORDS: [&str; 26] = [
    "Alfa", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliett",
    "Kilo", "Lima", "Mike", "November", "Oscar", "Papa", "Quebec", "Romeo", "Sierra", "Tango",
    "Uniform", "Victor", "Whiskey", "X-ray", "Yankee", "Zulu",
];
const NATO_DIGITS: [&str; 10] = [
    "Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine",
];

/// How a NATO variant writes words.
#[derive(Clone, Copy)]
struct NatoStyle {
    /// "Alpha", "Juliet", "Xray", "Whisky" instead of the ICAO spellings.
    alt_spelling: bool,
    /// 0 title case, 1 lower, 2 upper.
    case: u8,
    /// Between the code words of one word.
    letter_sep: &'static str,
    /// Between words (None: words run together).
    word_sep: Option<&'static str>,
    /// Digits spoken as words; else kept as digits.
    digits: bool,
}

fn nato(text: &str, style: NatoStyle) -> String {
    let mut words_out: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        let mut codes: Vec<String> = Vec::new();
        for c in word.chars() {
            let code = if c.is_ascii_alphabetic() {
                let i = (c.to_ascii_lowercase() as u8 - b'a') as usize;
                let mut w = NATO_WORDS.get(i).copied().unwrap_or("").to_string();
                if style.alt_spelling {
                    w = match w.as_str() {
                        "Alfa" => "Alpha".into(),
                        "Juliett" => "Juliet".into(),
                        "X-ray" => "Xray".into(),
                        "Whiskey" => "Whisky".into(),
                        other => other.into(),
                    };
                }
                w
            } else if c.is_ascii_digit() {
                if style.digits {
                    NATO_DIGITS
                        .get((c as u8 - b'0') as usize)
                        .copied()
                        .unwrap_or("")
                        .to_string()
                } else {
                    c.to_string()
                }
            } else {
                // Punctuation is dropped, as most generators do.
                continue;
            };
            codes.push(match style.case {
                1 => code.to_lowercase(),
                2 => code.to_uppercase(),
                _ => code,
            });
        }
        if !codes.is_empty() {
            words_out.push(codes.join(style.letter_sep));
        }
    }
    match style.word_sep {
        Some(sep) => words_out.join(sep),
        None => words_out.join(style.letter_sep),
    }
}

// ------------------------------------------------------------------ main

type Encoder = Box<dyn Fn(&str, &str) -> String>;

fn variants() -> Vec<(&'static str, Encoder)> {
    let nato_v = |alt: bool, case: u8, ls: &'static str, ws: Option<&'static str>, d: bool| {
        let style = NatoStyle {
            alt_spelling: alt,
            case,
            letter_sep: ls,
            word_sep: ws,
            digits: d,
        };
        Box::new(move |t: &str, _id: &str| nato(t, style)) as Encoder
    };
    vec![
        (
            "leet:digits-full",
            Box::new(|t: &str, id: &str| leet(t, 0, 100, false, &mut Rng::new(id, 1))),
        ),
        (
            "leet:digits-half",
            Box::new(|t: &str, id: &str| leet(t, 0, 50, false, &mut Rng::new(id, 2))),
        ),
        (
            "leet:symbols-full",
            Box::new(|t: &str, id: &str| leet(t, 1, 100, false, &mut Rng::new(id, 3))),
        ),
        (
            "leet:mixed-70-case",
            Box::new(|t: &str, id: &str| leet(t, 2, 70, true, &mut Rng::new(id, 4))),
        ),
        (
            "leet:mixed-full",
            Box::new(|t: &str, id: &str| leet(t, 2, 100, false, &mut Rng::new(id, 5))),
        ),
        (
            "leet:mixed-30",
            Box::new(|t: &str, id: &str| leet(t, 2, 30, false, &mut Rng::new(id, 6))),
        ),
        (
            "braille:plain",
            Box::new(|t: &str, _| braille(t, false, false, false)),
        ),
        (
            "braille:indicators",
            Box::new(|t: &str, _| braille(t, true, false, true)),
        ),
        (
            "braille:blank-cells",
            Box::new(|t: &str, _| braille(t, true, true, true)),
        ),
        (
            "braille:no-punct-cells",
            Box::new(|t: &str, _| braille(t, false, true, false)),
        ),
        // What NATO decoding can give back at best: the words, lower case, without
        // punctuation (the spelling alphabet has none; generators drop it).
        (
            "nato:ceiling-no-punct",
            Box::new(|t: &str, _| {
                t.split_whitespace()
                    .map(|w| {
                        w.chars()
                            .filter(char::is_ascii_alphanumeric)
                            .collect::<String>()
                            .to_lowercase()
                    })
                    .filter(|w| !w.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        ),
        ("nato:glued", nato_v(false, 0, " ", None, false)),
        (
            "nato:slash-words",
            nato_v(false, 0, " ", Some(" / "), false),
        ),
        ("nato:alt-spelling", nato_v(true, 0, " ", None, true)),
        ("nato:lower-dash", nato_v(false, 1, "-", Some(" "), false)),
        ("nato:upper-comma", nato_v(true, 2, ", ", Some(" | "), true)),
        (
            "nato:newline-words",
            nato_v(false, 0, " ", Some("\n"), true),
        ),
    ]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut path = "/work/shared/scan-corpus/dev.jsonl".to_string();
    let mut show: Option<(String, usize)> = None;
    while let Some(a) = args.next() {
        if a == "--show" {
            let v = args.next().unwrap_or_default();
            let n = args.next().and_then(|n| n.parse().ok()).unwrap_or(5);
            show = Some((v, n));
        } else {
            path = a;
        }
    }
    let data = std::fs::read_to_string(&path).expect("read corpus");
    let scanner = Scanner::new(&ScanConfig::default()).expect("scanner");
    let rows: Vec<Row> = data
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Row>(l).expect("row"))
        .filter(|r| r.label == 1 && r.encoding == "plain" && is_dev(&r.id))
        .collect();
    let base: Vec<&Row> = rows
        .iter()
        .filter(|r| scanner.scan(&r.text).is_flagged())
        .collect();
    println!(
        "dev plain injections: {}, flagged as plain text: {}",
        rows.len(),
        base.len()
    );
    println!("{:<24} {:>8} {:>8}", "variant", "recall", "misses");
    for (name, encode) in variants() {
        let mut misses = Vec::new();
        for r in &base {
            let encoded = encode(&r.text, &r.id);
            if !scanner.scan(&encoded).is_flagged() {
                misses.push((r.id.as_str(), encoded));
            }
        }
        let recall = 1.0 - misses.len() as f64 / base.len().max(1) as f64;
        println!("{name:<24} {recall:>8.3} {:>8}", misses.len());
        if let Some((v, n)) = &show
            && v == name
        {
            for (id, text) in misses.iter().take(*n) {
                let shown: String = text.chars().take(300).collect();
                println!("  {id}: {shown:?}");
            }
        }
    }
}
