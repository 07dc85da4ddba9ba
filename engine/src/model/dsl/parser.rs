//! Recursive-descent parser from DSL text to a syntax tree that keeps the position of every
//! name, restriction and rewrite operand, so that later checks can point at them.

use std::collections::VecDeque;

use super::Loc;
use super::lexer::{Lexer, Tok, Token};
use crate::model::{
    ConditionParamType, Difference, Empty, ObjectRelation, RelationReference, TupleToUserset,
    TypeName, Userset, Usersets, Wildcard,
};

/// The first line of a file: `model` + `schema X.Y`, or `module name`.
#[derive(Debug, Clone)]
pub(crate) enum Header {
    Model { version: String, loc: Loc },
    Module { name: String, loc: Loc },
}

/// Where a rewrite operand starts, and for `x from y`, where `y` is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeafLoc {
    pub start: Loc,
    pub tupleset: Option<Loc>,
}

/// `define name: rewrite`.
#[derive(Debug, Clone)]
pub(crate) struct ParsedRelation {
    pub name: String,
    pub loc: Loc,
    pub rewrite: Userset,
    pub restrictions: Vec<RelationReference>,
    pub restriction_locs: Vec<Loc>,
    /// One per rewrite leaf, in the pre-order of `typecheck::leaves`.
    pub leaves: Vec<LeafLoc>,
}

/// `type name` or `extend type name`, with its relations in source order.
#[derive(Debug, Clone)]
pub(crate) struct ParsedType {
    pub name: String,
    pub loc: Loc,
    pub extend: bool,
    pub relations: Vec<ParsedRelation>,
}

/// `condition name(params) { expression }`.
#[derive(Debug, Clone)]
pub(crate) struct ParsedCondition {
    pub name: String,
    pub loc: Loc,
    pub params: Vec<(String, Loc, ConditionParamType)>,
    pub expression: String,
}

/// One DSL file as written.
#[derive(Debug, Clone)]
pub(crate) struct ParsedFile {
    pub header: Header,
    pub types: Vec<ParsedType>,
    pub conditions: Vec<ParsedCondition>,
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub loc: Loc,
    pub message: String,
}

type PResult<T> = Result<T, SyntaxError>;

/// Parses one file; `file` is stamped into every position.
pub(crate) fn parse(src: &str, file: usize) -> Result<ParsedFile, Vec<SyntaxError>> {
    Parser {
        lexer: Lexer::new(src, file),
        ahead: VecDeque::new(),
        errors: Vec::new(),
        nesting: 0,
    }
    .file()
}

/// Words that cannot name a type, relation or condition because they are operators.
const OPERATORS: [&str; 4] = ["and", "or", "from", "with"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Or,
    And,
    ButNot,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Or => "or",
            Op::And => "and",
            Op::ButNot => "but not",
        }
    }
}

/// What the previous statement allows next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Right after `type x`: `relations` may follow.
    TypeLine,
    /// Inside `relations`: `define` may follow.
    Relations,
    /// After a `type` line that failed to parse: its relations are skipped silently.
    Broken,
    /// Anything else.
    Other,
}

/// Restrictions, their positions and leaf positions collected while parsing one relation.
#[derive(Default)]
struct RelationParts {
    restrictions: Vec<RelationReference>,
    restriction_locs: Vec<Loc>,
    leaves: Vec<LeafLoc>,
}

struct Parser {
    lexer: Lexer,
    ahead: VecDeque<Token>,
    errors: Vec<SyntaxError>,
    /// Parentheses open in the relation definition being parsed.
    nesting: usize,
}

fn err<T>(loc: Loc, message: impl Into<String>) -> PResult<T> {
    Err(SyntaxError {
        loc,
        message: message.into(),
    })
}

fn is_identifier(w: &str) -> bool {
    let mut chars = w.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn param_type(name: &str) -> Option<TypeName> {
    Some(match name {
        "bool" => TypeName::TYPE_NAME_BOOL,
        "string" => TypeName::TYPE_NAME_STRING,
        "int" => TypeName::TYPE_NAME_INT,
        "uint" => TypeName::TYPE_NAME_UINT,
        "double" => TypeName::TYPE_NAME_DOUBLE,
        "duration" => TypeName::TYPE_NAME_DURATION,
        "timestamp" => TypeName::TYPE_NAME_TIMESTAMP,
        "ipaddress" => TypeName::TYPE_NAME_IPADDRESS,
        _ => return None,
    })
}

const PARAM_TYPES: &str =
    "`bool`, `string`, `int`, `uint`, `double`, `duration`, `timestamp`, `ipaddress`";

impl Parser {
    fn peek_at(&mut self, n: usize) -> &Token {
        while self.ahead.len() <= n {
            let t = self.lexer.next_token();
            self.ahead.push_back(t);
        }
        &self.ahead[n]
    }

    fn peek(&mut self) -> &Token {
        self.peek_at(0)
    }

    fn bump(&mut self) -> Token {
        self.peek_at(0);
        self.ahead
            .pop_front()
            .unwrap_or_else(|| self.lexer.next_token())
    }

    fn at_word(&mut self, w: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(x) if x == w)
    }

    fn at_punct(&mut self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn skip_newlines(&mut self) {
        while self.peek().tok == Tok::Newline {
            self.bump();
        }
    }

    fn unexpected<T>(&mut self, expected: &str) -> PResult<T> {
        let t = self.peek().clone();
        err(
            t.loc,
            format!("expected {expected}, found {}", t.describe()),
        )
    }

    fn expect_punct(&mut self, c: char) -> PResult<Token> {
        if self.at_punct(c) {
            Ok(self.bump())
        } else {
            self.unexpected(&format!("`{c}`"))
        }
    }

    fn expect_word(&mut self, w: &str) -> PResult<Token> {
        if self.at_word(w) {
            Ok(self.bump())
        } else {
            self.unexpected(&format!("`{w}`"))
        }
    }

    /// A type, relation, condition or parameter name.
    fn name(&mut self, what: &str) -> PResult<(String, Loc)> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Word(w) if OPERATORS.contains(&w.as_str()) => err(
                t.loc,
                format!("`{w}` is a keyword and cannot be used as a {what}"),
            ),
            Tok::Word(w) if is_identifier(w) => {
                self.bump();
                Ok((w.clone(), t.loc))
            }
            Tok::Word(w) => err(
                t.loc,
                format!(
                    "`{w}` is not a valid {what}: use letters, digits, `_` and `-`, starting with a letter or `_`"
                ),
            ),
            _ => self.unexpected(&format!("a {what}")),
        }
    }

    /// A name glued to the previous token (`group#member`, `user:*`).
    fn glued(&mut self, what: &str) -> PResult<(String, Loc)> {
        if self.peek().space_before {
            let loc = self.peek().loc;
            return err(loc, format!("unexpected whitespace before the {what}"));
        }
        self.name(what)
    }

    fn end_of_line(&mut self) -> PResult<()> {
        match self.peek().tok {
            Tok::Newline | Tok::Eof => Ok(()),
            _ => self.unexpected("end of line"),
        }
    }

    /// Skips the rest of the current line after an error.
    fn recover(&mut self) {
        while !matches!(self.peek().tok, Tok::Newline | Tok::Eof) {
            self.bump();
        }
    }

    fn file(mut self) -> Result<ParsedFile, Vec<SyntaxError>> {
        self.skip_newlines();
        let header = match self.header() {
            Ok(h) => h,
            Err(e) => return Err(vec![e]),
        };
        let mut types: Vec<ParsedType> = Vec::new();
        let mut conditions = Vec::new();
        let mut state = State::Other;
        let mut relations_kw: Option<Loc> = None;
        let mut recovering = false;
        loop {
            self.skip_newlines();
            let t = self.peek().clone();
            let word = match &t.tok {
                Tok::Eof => break,
                Tok::Word(w) => w.as_str(),
                _ => "",
            };
            if !matches!(
                word,
                "type" | "extend" | "relations" | "define" | "condition"
            ) && recovering
            {
                self.recover();
                continue;
            }
            recovering = false;
            if matches!(word, "type" | "extend" | "condition") {
                self.close_type(&mut relations_kw);
            }
            let result = match word {
                "type" | "extend" if !conditions.is_empty() => {
                    err(t.loc, "type definitions must come before conditions")
                }
                "type" | "extend" => self.type_line().map(|ty| {
                    types.push(ty);
                    state = State::TypeLine;
                }),
                "relations" if state == State::TypeLine => {
                    self.bump();
                    relations_kw = Some(t.loc);
                    state = State::Relations;
                    self.end_of_line()
                }
                "relations" | "define" if state == State::Broken => {
                    self.recover();
                    Ok(())
                }
                "relations" => err(t.loc, "`relations` must directly follow a `type` line"),
                "define" if state == State::Relations => {
                    relations_kw = None;
                    match types.last_mut() {
                        Some(ty) => self.define().map(|r| ty.relations.push(r)),
                        None => err(t.loc, "`define` must be inside the `relations` of a type"),
                    }
                }
                "define" => err(t.loc, "`define` must be inside the `relations` of a type"),
                "condition" => {
                    state = State::Other;
                    self.condition().map(|c| conditions.push(c))
                }
                _ => self.unexpected("`type`, `relations`, `define` or `condition`"),
            };
            if let Err(e) = result {
                self.errors.push(e);
                state = match word {
                    "type" | "extend" => State::Broken,
                    _ if state == State::Relations => State::Relations,
                    _ => State::Other,
                };
                recovering = true;
                self.recover();
            }
        }
        self.close_type(&mut relations_kw);
        if self.errors.is_empty() {
            Ok(ParsedFile {
                header,
                types,
                conditions,
            })
        } else {
            Err(self.errors)
        }
    }

    /// Reports a `relations` keyword that got no `define` before its type ended.
    fn close_type(&mut self, relations_kw: &mut Option<Loc>) {
        if let Some(loc) = relations_kw.take() {
            self.errors.push(SyntaxError {
                loc,
                message: "expected at least one `define` after `relations`".into(),
            });
        }
    }

    fn header(&mut self) -> PResult<Header> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Word(w) if w == "model" => {
                self.bump();
                self.end_of_line()?;
                self.skip_newlines();
                if !self.at_word("schema") {
                    return self.unexpected("`schema` on the line after `model`");
                }
                self.bump();
                let v = self.peek().clone();
                let version = match &v.tok {
                    Tok::Word(w) if !v.space_before => {
                        return err(
                            v.loc,
                            format!("expected whitespace between `schema` and `{w}`"),
                        );
                    }
                    Tok::Word(w) => {
                        let mut parts = w.split('.');
                        let ok = parts.next().is_some_and(|p| {
                            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
                        }) && parts.next().is_some_and(|p| {
                            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
                        }) && parts.next().is_none();
                        if !ok {
                            return err(
                                v.loc,
                                format!("expected a schema version such as `1.1`, found `{w}`"),
                            );
                        }
                        w.clone()
                    }
                    _ => return self.unexpected("a schema version such as `1.1`"),
                };
                self.bump();
                self.end_of_line()?;
                Ok(Header::Model {
                    version,
                    loc: v.loc,
                })
            }
            Tok::Word(w) if w == "module" => {
                self.bump();
                let n = self.peek().clone();
                let name = match &n.tok {
                    Tok::Word(w) if !OPERATORS.contains(&w.as_str()) => w.clone(),
                    _ => return self.unexpected("a module name"),
                };
                self.bump();
                self.end_of_line()?;
                Ok(Header::Module { name, loc: n.loc })
            }
            _ => self.unexpected("`model` and `schema 1.1` at the start of the model"),
        }
    }

    fn type_line(&mut self) -> PResult<ParsedType> {
        let extend = self.at_word("extend");
        if extend {
            self.bump();
        }
        self.expect_word("type")?;
        let (name, loc) = self.name("type name")?;
        self.end_of_line()?;
        Ok(ParsedType {
            name,
            loc,
            extend,
            relations: Vec::new(),
        })
    }

    fn define(&mut self) -> PResult<ParsedRelation> {
        self.expect_word("define")?;
        let (name, loc) = self.name("relation name")?;
        self.expect_punct(':')?;
        let mut parts = RelationParts::default();
        let rewrite = self.expr(&mut parts, true)?;
        self.end_of_line()?;
        Ok(ParsedRelation {
            name,
            loc,
            rewrite,
            restrictions: parts.restrictions,
            restriction_locs: parts.restriction_locs,
            leaves: parts.leaves,
        })
    }

    /// The operator at the cursor, if any, and where it starts.
    fn peek_op(&mut self) -> Option<(Op, Loc)> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Word(w) if w == "or" => Some((Op::Or, t.loc)),
            Tok::Word(w) if w == "and" => Some((Op::And, t.loc)),
            Tok::Word(w)
                if w == "but" && matches!(&self.peek_at(1).tok, Tok::Word(n) if n == "not") =>
            {
                Some((Op::ButNot, t.loc))
            }
            _ => None,
        }
    }

    /// `operand (op operand)*` with one operator kind, or `a but not b`; mixing needs parentheses.
    fn expr(&mut self, parts: &mut RelationParts, allow_direct: bool) -> PResult<Userset> {
        let first = self.operand(parts, allow_direct)?;
        let mut operands = vec![first];
        let mut op: Option<Op> = None;
        while let Some((next, loc)) = self.peek_op() {
            match op {
                Some(prev) if prev != next => {
                    return err(
                        loc,
                        format!(
                            "cannot mix `{}` and `{}` without parentheses; group the operands with `(` and `)`",
                            prev.text(),
                            next.text()
                        ),
                    );
                }
                Some(Op::ButNot) => {
                    return err(
                        loc,
                        "`but not` cannot be chained; group the operands with `(` and `)`",
                    );
                }
                _ => {}
            }
            self.bump();
            if next == Op::ButNot {
                self.bump();
            }
            op = Some(next);
            operands.push(self.operand(parts, false)?);
        }
        Ok(match (op, operands.len()) {
            (Some(Op::Or), _) => Userset::Union(Usersets { child: operands }),
            (Some(Op::And), _) => Userset::Intersection(Usersets { child: operands }),
            (Some(Op::ButNot), 2) => {
                let mut it = operands.into_iter();
                match (it.next(), it.next()) {
                    (Some(base), Some(subtract)) => Userset::Difference(Difference {
                        base: Box::new(base),
                        subtract: Box::new(subtract),
                    }),
                    _ => return err(self.peek().loc, "`but not` needs two operands"),
                }
            }
            (None, 1) => match operands.pop() {
                Some(only) => only,
                None => return err(self.peek().loc, "expected a relation definition"),
            },
            _ => return err(self.peek().loc, "malformed relation definition"),
        })
    }

    fn operand(&mut self, parts: &mut RelationParts, allow_direct: bool) -> PResult<Userset> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Punct('[') if allow_direct => {
                self.restrictions(parts)?;
                parts.leaves.push(LeafLoc {
                    start: t.loc,
                    tupleset: None,
                });
                Ok(Userset::This(Empty {}))
            }
            Tok::Punct('[') => err(
                t.loc,
                "direct type restrictions `[...]` must come first in a relation definition and appear only once",
            ),
            Tok::Punct('(') => {
                if self.nesting >= crate::bounds::MAX_NESTING {
                    return err(
                        t.loc,
                        format!(
                            "the relation definition nests deeper than {} parentheses",
                            crate::bounds::MAX_NESTING
                        ),
                    );
                }
                self.bump();
                self.nesting += 1;
                let inner = self.expr(parts, allow_direct);
                self.nesting -= 1;
                let inner = inner?;
                self.expect_punct(')')?;
                Ok(inner)
            }
            Tok::Word(_) => {
                let (relation, start) = self.name("relation name")?;
                if self.at_word("from") {
                    self.bump();
                    let (tupleset, ts_loc) = self.name("relation name")?;
                    parts.leaves.push(LeafLoc {
                        start,
                        tupleset: Some(ts_loc),
                    });
                    Ok(Userset::TupleToUserset(TupleToUserset {
                        tupleset: ObjectRelation {
                            object: String::new(),
                            relation: tupleset,
                        },
                        computed_userset: ObjectRelation {
                            object: String::new(),
                            relation,
                        },
                    }))
                } else {
                    parts.leaves.push(LeafLoc {
                        start,
                        tupleset: None,
                    });
                    Ok(Userset::ComputedUserset(ObjectRelation {
                        object: String::new(),
                        relation,
                    }))
                }
            }
            _ => self.unexpected(if allow_direct {
                "`[`, `(` or a relation name"
            } else {
                "`(` or a relation name"
            }),
        }
    }

    /// `[user, user:*, group#member, user with cond]`, possibly over several lines.
    fn restrictions(&mut self, parts: &mut RelationParts) -> PResult<()> {
        let open = self.expect_punct('[')?;
        loop {
            self.skip_newlines();
            let (type_name, loc) = self.name("type name")?;
            let mut r = RelationReference {
                type_name,
                ..RelationReference::default()
            };
            if self.at_punct(':') && !self.peek().space_before {
                self.bump();
                if self.peek().space_before || !self.at_punct('*') {
                    return self.unexpected("`*` right after `:`");
                }
                self.bump();
                r.wildcard = Some(Wildcard {});
            } else if self.at_punct('#') {
                self.bump();
                r.relation = Some(self.glued("relation name")?.0);
            }
            if self.at_word("with") {
                self.bump();
                r.condition = self.name("condition name")?.0;
            }
            parts.restrictions.push(r);
            parts.restriction_locs.push(loc);
            let line_ended = self.peek().tok == Tok::Newline;
            self.skip_newlines();
            if self.at_punct(',') {
                self.bump();
                continue;
            }
            if self.at_punct(']') {
                self.bump();
                return Ok(());
            }
            if line_ended || self.peek().tok == Tok::Eof {
                return err(
                    open.loc,
                    "this `[` is never closed: expected `,` or `]` after a type restriction",
                );
            }
            return self.unexpected("`,` or `]`");
        }
    }

    fn condition(&mut self) -> PResult<ParsedCondition> {
        self.expect_word("condition")?;
        let (name, loc) = self.name("condition name")?;
        self.expect_punct('(')?;
        let mut params: Vec<(String, Loc, ConditionParamType)> = Vec::new();
        loop {
            self.skip_newlines();
            let (pname, ploc) = self.name("parameter name")?;
            self.expect_punct(':')?;
            let ty = self.param_type()?;
            if params.iter().any(|(n, _, _)| *n == pname) {
                return err(
                    ploc,
                    format!("parameter `{pname}` is already defined in the condition `{name}`"),
                );
            }
            params.push((pname, ploc, ty));
            self.skip_newlines();
            if self.at_punct(',') {
                self.bump();
                continue;
            }
            self.expect_punct(')')?;
            break;
        }
        let open = self.expect_punct('{')?;
        if !self.ahead.is_empty() {
            return err(open.loc, "internal parser error: lookahead past `{`");
        }
        let Some(expression) = self.lexer.condition_body() else {
            return err(
                open.loc,
                format!("the body of condition `{name}` has no closing `}}`"),
            );
        };
        if expression.is_empty() {
            return err(
                open.loc,
                format!("condition `{name}` has an empty expression"),
            );
        }
        self.end_of_line()?;
        Ok(ParsedCondition {
            name,
            loc,
            params,
            expression,
        })
    }

    /// `string`, `list<string>`, `map<int>`, ...
    fn param_type(&mut self) -> PResult<ConditionParamType> {
        let t = self.peek().clone();
        let Tok::Word(w) = &t.tok else {
            return self.unexpected("a parameter type");
        };
        if let Some(type_name) = param_type(w) {
            self.bump();
            return Ok(ConditionParamType {
                type_name,
                generic_types: Vec::new(),
            });
        }
        let container = match w.as_str() {
            "list" => TypeName::TYPE_NAME_LIST,
            "map" => TypeName::TYPE_NAME_MAP,
            _ => {
                return err(
                    t.loc,
                    format!(
                        "unknown parameter type `{w}`: expected `list<T>`, `map<T>` or one of {PARAM_TYPES}"
                    ),
                );
            }
        };
        self.bump();
        if !self.at_punct('<') {
            return self.unexpected(&format!("`<` after `{w}` (e.g. `{w}<string>`)"));
        }
        self.bump();
        let g = self.peek().clone();
        let generic = match &g.tok {
            Tok::Word(gw) => param_type(gw).ok_or_else(|| SyntaxError {
                loc: g.loc,
                message: format!("unsupported generic type `{gw}`: expected one of {PARAM_TYPES}"),
            })?,
            _ => return self.unexpected("a generic type"),
        };
        self.bump();
        self.expect_punct('>')?;
        Ok(ConditionParamType {
            type_name: container,
            generic_types: vec![ConditionParamType {
                type_name: generic,
                generic_types: Vec::new(),
            }],
        })
    }
}
