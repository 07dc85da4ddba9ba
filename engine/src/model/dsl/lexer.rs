//! Tokens of the model DSL, with 1-based positions; comments are dropped here.
//!
//! A `#` starts a comment when it begins a line or follows whitespace (as in OpenFGA, where
//! `group#member` is a userset and `group #member` a type followed by a comment).

use super::Loc;

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// A run of letters, digits, `_`, `-`, `.` and `/`: names, keywords and versions.
    Word(String),
    /// One of `: , [ ] ( ) # * < > { }`.
    Punct(char),
    Newline,
    Eof,
    /// A character the DSL has no use for.
    Bad(char),
}

/// A token and where it starts.
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub tok: Tok,
    pub loc: Loc,
    /// Whether whitespace separates it from the previous token on the same line.
    pub space_before: bool,
}

impl Token {
    /// The token as shown in error messages.
    pub fn describe(&self) -> String {
        match &self.tok {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Punct(c) | Tok::Bad(c) => format!("`{c}`"),
            Tok::Newline => "end of line".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

/// A cursor over the source that hands out tokens, or raw text for condition bodies.
pub(super) struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    column: usize,
    file: usize,
}

impl Lexer {
    pub fn new(src: &str, file: usize) -> Self {
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        Lexer {
            chars: src.chars().collect(),
            i: 0,
            line: 1,
            column: 1,
            file,
        }
    }

    fn loc(&self) -> Loc {
        Loc {
            file: self.file,
            line: self.line,
            column: self.column,
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn bump_char(&mut self) -> Option<char> {
        let c = self.chars.get(self.i).copied()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_to_end_of_line(&mut self) {
        while self.peek_char().is_some_and(|c| c != '\n') {
            self.bump_char();
        }
    }

    /// The next token, skipping whitespace and comments.
    pub fn next_token(&mut self) -> Token {
        let mut space = false;
        loop {
            match self.peek_char() {
                Some(' ' | '\t' | '\u{c}') => {
                    self.bump_char();
                    space = true;
                }
                Some('\r') if self.chars.get(self.i + 1) == Some(&'\n') => {
                    self.bump_char();
                }
                Some('#') if space || self.column == 1 => self.skip_to_end_of_line(),
                _ => break,
            }
        }
        let loc = self.loc();
        let tok = match self.bump_char() {
            None => Tok::Eof,
            Some('\n' | '\r') => Tok::Newline,
            Some(c) if is_word_char(c) => {
                let mut w = String::from(c);
                while let Some(c) = self.peek_char().filter(|c| is_word_char(*c)) {
                    w.push(c);
                    self.bump_char();
                }
                Tok::Word(w)
            }
            Some(c @ (':' | ',' | '[' | ']' | '(' | ')' | '#' | '*' | '<' | '>' | '{' | '}')) => {
                Tok::Punct(c)
            }
            Some(c) => Tok::Bad(c),
        };
        Token {
            tok,
            loc,
            space_before: space,
        }
    }

    /// The text of a condition body, from just after its `{` to the matching `}` (consumed),
    /// with comments removed, each line's trailing whitespace removed and the whole trimmed.
    /// Braces inside string literals do not count. `None` when the input ends first.
    pub fn condition_body(&mut self) -> Option<String> {
        let mut out = String::new();
        let mut depth = 0usize;
        loop {
            let at_line_start = self.column == 1;
            let c = self.bump_char()?;
            match c {
                '{' => {
                    depth += 1;
                    out.push(c);
                }
                '}' if depth == 0 => break,
                '}' => {
                    depth -= 1;
                    out.push(c);
                }
                '"' | '\'' => {
                    let raw = out.ends_with(['r', 'R'])
                        && !out[..out.len() - 1]
                            .ends_with(|p: char| p.is_ascii_alphanumeric() || p == '_');
                    out.push(c);
                    self.string_literal(c, raw, &mut out);
                }
                '#' if at_line_start || out.ends_with([' ', '\t']) => self.skip_to_end_of_line(),
                '\r' => {}
                _ => out.push(c),
            }
        }
        let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
        Some(lines.join("\n").trim().to_owned())
    }

    /// Copies a CEL string literal whose opening `quote` was just read into `out`.
    fn string_literal(&mut self, quote: char, raw: bool, out: &mut String) {
        let triple = self.peek_char() == Some(quote) && self.chars.get(self.i + 1) == Some(&quote);
        if triple {
            for _ in 0..2 {
                if let Some(c) = self.bump_char() {
                    out.push(c);
                }
            }
        }
        let mut closing = 0;
        while let Some(c) = self.peek_char() {
            if c == '\n' && !triple {
                return; // unterminated; CEL reports it
            }
            self.bump_char();
            out.push(c);
            if c == '\\' && !raw {
                if let Some(e) = self.bump_char() {
                    out.push(e);
                }
                closing = 0;
                continue;
            }
            if c == quote {
                closing += 1;
                if !triple || closing == 3 {
                    return;
                }
            } else {
                closing = 0;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        let mut l = Lexer::new(src, 0);
        let mut out = Vec::new();
        loop {
            let t = l.next_token();
            if t.tok == Tok::Eof {
                return out;
            }
            out.push(t.tok);
        }
    }

    #[test]
    fn comments_need_whitespace_before_them() {
        let w = |s: &str| Tok::Word(s.into());
        assert_eq!(
            toks("# c\n  define a: [group#member] # trailing\n"),
            [
                Tok::Newline,
                w("define"),
                w("a"),
                Tok::Punct(':'),
                Tok::Punct('['),
                w("group"),
                Tok::Punct('#'),
                w("member"),
                Tok::Punct(']'),
                Tok::Newline
            ]
        );
    }

    #[test]
    fn condition_body_keeps_braces_in_strings_and_nesting() {
        let mut l = Lexer::new(
            "\n  x == \"}\" && {'a': 1}['a'] == 1 # note\n  && y   \n}\nrest",
            0,
        );
        assert_eq!(
            l.condition_body().unwrap(),
            "x == \"}\" && {'a': 1}['a'] == 1\n  && y"
        );
        assert_eq!(l.next_token().tok, Tok::Newline);
        assert_eq!(
            l.next_token().loc,
            Loc {
                file: 0,
                line: 5,
                column: 1
            }
        );
    }

    #[test]
    fn unterminated_condition_body() {
        assert_eq!(Lexer::new("x < 1", 0).condition_body(), None);
    }
}
