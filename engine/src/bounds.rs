//! Bounds on the expressions tenants write (Cedar policies, CEL conditions), checked on the
//! text before any parser sees it.
//!
//! Both parsers, the trees they build and the code that evaluates, prints and drops those
//! trees recurse once per nesting level and once per operator of a left-leaning chain
//! (`1 + 1 + …`, `a.b.b…`, `if … then … else if …`). Text that nests deeper than a worker's
//! stack would abort the whole process, so such text is refused here with a clear message:
//! at most [`MAX_NESTING`] open brackets at once and at most [`MAX_OPERATORS`] operators in
//! one expression (a policy, or a condition). The scan is a small lexer: strings and
//! comments are skipped, so a long list of addresses or a regular expression counts nothing.

/// Most brackets (`(`, `[`, `{`) open at once in one expression.
pub const MAX_NESTING: usize = 32;

/// Most operators (`.`, arithmetic, comparisons, `!`, `&&`, `||`, `if`, `in`, `has`, …) in one
/// expression: a Cedar policy (up to its `;`) or a CEL condition. Each may add a level to the
/// expression's tree.
pub const MAX_OPERATORS: usize = 512;

/// The language of a text: what its strings and comments look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Cedar: `"…"` strings with `\` escapes, `//` comments, policies end at `;`.
    Cedar,
    /// CEL: `"…"`, `'…'`, triple-quoted and raw (`r"…"`) strings, `//` comments.
    Cel,
}

/// Where a text exceeds a bound, as a message for the tenant (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Checks `text` against [`MAX_NESTING`] and [`MAX_OPERATORS`].
pub fn check(text: &str, lang: Language) -> Result<(), Exceeded> {
    check_with(text, lang, MAX_NESTING, MAX_OPERATORS)
}

/// [`check`] with other limits.
pub fn check_with(
    text: &str,
    lang: Language,
    max_nesting: usize,
    max_operators: usize,
) -> Result<(), Exceeded> {
    let b = text.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    let mut operators = 0usize;
    let at = |pos: usize, message: String| {
        let before = &text[..pos.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Exceeded {
            line,
            column,
            message,
        }
    };
    while i < b.len() {
        let c = b[i];
        // Comments run to the end of the line.
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'"' || (lang == Language::Cel && c == b'\'') {
            i = skip_string(b, i, lang);
            continue;
        }
        match c {
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > max_nesting {
                    return Err(at(
                        i,
                        format!(
                            "the expression nests deeper than {max_nesting} brackets; split it up"
                        ),
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b';' if lang == Language::Cedar && depth == 0 => operators = 0,
            b'.' | b'+' | b'-' | b'*' | b'/' | b'%' | b'<' | b'>' | b'!' | b'?' => operators += 1,
            b'=' if b.get(i + 1) == Some(&b'=') => {
                operators += 1;
                i += 1;
            }
            b'&' | b'|' if b.get(i + 1) == Some(&c) => {
                operators += 1;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &text[start..i];
                // A raw or bytes prefix of a CEL string: the string follows at once.
                if lang == Language::Cel
                    && matches!(
                        word,
                        "r" | "R"
                            | "b"
                            | "B"
                            | "rb"
                            | "rB"
                            | "Rb"
                            | "RB"
                            | "br"
                            | "bR"
                            | "Br"
                            | "BR"
                    )
                    && matches!(b.get(i), Some(b'"' | b'\''))
                {
                    let raw = word.contains(['r', 'R']);
                    i = if raw {
                        skip_raw_string(b, i)
                    } else {
                        skip_string(b, i, lang)
                    };
                    continue;
                }
                if matches!(word, "if" | "then" | "else" | "in" | "has" | "like" | "is") {
                    operators += 1;
                }
                if operators > max_operators {
                    return Err(at(start, too_many(max_operators)));
                }
                continue;
            }
            _ => {}
        }
        if operators > max_operators {
            return Err(at(i, too_many(max_operators)));
        }
        i += 1;
    }
    Ok(())
}

fn too_many(max: usize) -> String {
    format!("the expression has more than {max} operators; split it up")
}

/// The index just past the string that opens at `b[i]` (`"` or `'`, tripled or not), with
/// `\` escapes; the end of the text if it never closes.
fn skip_string(b: &[u8], i: usize, lang: Language) -> usize {
    let q = b[i];
    let triple = lang == Language::Cel && b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            c if c == q => {
                if !triple {
                    return j + 1;
                }
                if b.get(j + 1) == Some(&q) && b.get(j + 2) == Some(&q) {
                    return j + 3;
                }
                j += 1;
            }
            _ => j += 1,
        }
    }
    b.len()
}

/// Like [`skip_string`] for a raw CEL string, where `\` escapes nothing.
fn skip_raw_string(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let triple = b.get(i + 1) == Some(&q) && b.get(i + 2) == Some(&q);
    let mut j = if triple { i + 3 } else { i + 1 };
    while j < b.len() {
        if b[j] == q {
            if !triple {
                return j + 1;
            }
            if b.get(j + 1) == Some(&q) && b.get(j + 2) == Some(&q) {
                return j + 3;
            }
        }
        j += 1;
    }
    b.len()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn deep_brackets_and_long_chains_are_refused() {
        let deep = format!("{}x{}", "(".repeat(33), ")".repeat(33));
        let e = check(&deep, Language::Cel).unwrap_err();
        assert!(e.message.contains("deeper than 32"), "{e:?}");
        assert_eq!((e.line, e.column), (1, 33));
        assert!(
            check(
                &format!("{}x{}", "(".repeat(32), ")".repeat(32)),
                Language::Cel
            )
            .is_ok()
        );
        let chain = vec!["1"; 514].join("+");
        assert!(check(&chain, Language::Cel).is_err());
        assert!(check(&vec!["1"; 513].join("+"), Language::Cel).is_ok());
        let ifs = format!(
            "permit (principal, action, resource) when {{ {} true }};",
            "if true then true else ".repeat(200)
        );
        assert!(check(&ifs, Language::Cedar).is_err());
        let members = format!("a{}", ".b".repeat(600));
        assert!(check(&members, Language::Cel).is_err());
    }

    #[test]
    fn strings_and_comments_count_nothing() {
        let ips = (0..2000)
            .map(|i| format!("\"10.0.{}.{}\"", i / 256, i % 256))
            .collect::<Vec<_>>()
            .join(", ");
        let policy = format!(
            "// (((((( ......\npermit (principal, action, resource) when {{ [{ips}].contains(\"x\") }};"
        );
        assert!(check(&policy, Language::Cedar).is_ok());
        assert!(
            check(
                r#"'(((((((((((((((((((((((((((((((((((((((' == "\"(((" "#,
                Language::Cel
            )
            .is_ok()
        );
        let after_raw = format!(r#"r"\" + {}1{}"#, "(".repeat(33), ")".repeat(33));
        assert!(
            check(&after_raw, Language::Cel).is_err(),
            "a raw string ends at its quote"
        );
    }

    #[test]
    fn each_cedar_policy_is_counted_alone() {
        let one = format!(
            "permit (principal, action, resource) when {{ {} }};\n",
            vec!["context.a == 1"; 100].join(" && ")
        );
        // 100 × 3 operators + 99 `&&` each: under the bound alone, far over it together.
        assert!(check(&one.repeat(20), Language::Cedar).is_ok());
    }
}
