//! Condition parameter types and the conversion of JSON context values into typed CEL values,
//! following OpenFGA's converters (`internal/condition/types`).

use std::collections::HashMap;
use std::fmt;

use cel::common::types::{
    CelBool, CelDouble, CelDuration, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString,
    CelTimestamp, CelUInt,
};
use cel::common::value::Val;
use serde_json::Value as Json;

use super::ipaddr::IpAddress;
use crate::model::{ConditionParamType, TypeName};

/// A decoded parameter type: what a context value is converted to before evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParamType {
    Any,
    Bool,
    String,
    Int,
    Uint,
    Double,
    Duration,
    Timestamp,
    IpAddress,
    List(Box<ParamType>),
    Map(Box<ParamType>),
}

impl ParamType {
    /// Decodes the wire form, checking the number of generic types.
    pub(crate) fn decode(t: &ConditionParamType) -> Result<Self, String> {
        let scalar = match t.type_name {
            TypeName::TYPE_NAME_UNSPECIFIED => {
                return Err("the parameter type is unspecified".to_owned());
            }
            TypeName::TYPE_NAME_ANY => Some(Self::Any),
            TypeName::TYPE_NAME_BOOL => Some(Self::Bool),
            TypeName::TYPE_NAME_STRING => Some(Self::String),
            TypeName::TYPE_NAME_INT => Some(Self::Int),
            TypeName::TYPE_NAME_UINT => Some(Self::Uint),
            TypeName::TYPE_NAME_DOUBLE => Some(Self::Double),
            TypeName::TYPE_NAME_DURATION => Some(Self::Duration),
            TypeName::TYPE_NAME_TIMESTAMP => Some(Self::Timestamp),
            TypeName::TYPE_NAME_IPADDRESS => Some(Self::IpAddress),
            TypeName::TYPE_NAME_LIST | TypeName::TYPE_NAME_MAP => None,
        };
        if let Some(scalar) = scalar {
            if !t.generic_types.is_empty() {
                return Err(format!(
                    "type `{scalar}` takes no generic types; found {}",
                    t.generic_types.len()
                ));
            }
            return Ok(scalar);
        }
        let [generic] = t.generic_types.as_slice() else {
            let name = if t.type_name == TypeName::TYPE_NAME_LIST {
                "list"
            } else {
                "map"
            };
            return Err(format!(
                "type `{name}` requires 1 generic type; found {}",
                t.generic_types.len()
            ));
        };
        let inner = Box::new(Self::decode(generic)?);
        Ok(if t.type_name == TypeName::TYPE_NAME_LIST {
            Self::List(inner)
        } else {
            Self::Map(inner)
        })
    }

    /// Whether a value of this type can be the result of a condition expression.
    pub(crate) fn may_be_bool(&self) -> bool {
        matches!(self, Self::Any | Self::Bool)
    }

    /// Converts a JSON context value to a CEL value of this type. Strings are borrowed, not copied.
    pub(crate) fn to_val<'v>(&self, value: &'v Json) -> Result<Box<dyn Val + 'v>, String> {
        let val: Box<dyn Val + 'v> = match self {
            Self::Any => any_to_val(value),
            Self::Bool => match value {
                Json::Bool(b) => Box::new(CelBool::from(*b)),
                other => return Err(expected("a bool", other)),
            },
            Self::String => match value {
                Json::String(s) => Box::new(CelString::from(s.as_str())),
                other => return Err(expected("a string", other)),
            },
            Self::Int => Box::new(CelInt::from(to_int(value)?)),
            Self::Uint => Box::new(CelUInt::from(to_uint(value)?)),
            Self::Double => Box::new(CelDouble::from(to_double(value)?)),
            Self::Duration => match value {
                Json::String(s) => Box::new(CelDuration::from(parse_go_duration(s)?)),
                other => return Err(expected("a duration string", other)),
            },
            Self::Timestamp => match value {
                Json::String(s) => Box::new(CelTimestamp::from(
                    // The same instant in UTC, as OpenFGA reads it (its hours, days, text).
                    parse_rfc3339(s)?.with_timezone(&chrono::Utc).fixed_offset(),
                )),
                other => return Err(expected("an RFC 3339 timestamp string", other)),
            },
            Self::IpAddress => match value {
                Json::String(s) => Box::new(IpAddress::parse(s).ok_or_else(|| {
                    format!("expected a well-formed IP address, but found `{s}`")
                })?),
                other => return Err(expected("an IP address string", other)),
            },
            Self::List(inner) => match value {
                Json::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        out.push(
                            inner
                                .to_val(item)
                                .map_err(|e| format!("invalid list element {i}: {e}"))?,
                        );
                    }
                    Box::new(CelList::from(out))
                }
                other => return Err(expected("a list", other)),
            },
            Self::Map(inner) => match value {
                Json::Object(entries) => {
                    let mut out = HashMap::with_capacity(entries.len());
                    for (key, item) in entries {
                        let item = inner
                            .to_val(item)
                            .map_err(|e| format!("invalid value for key `{key}`: {e}"))?;
                        out.insert(CelMapKey::from(key.as_str()), item);
                    }
                    Box::new(CelMap::from(out))
                }
                other => return Err(expected("a map", other)),
            },
        };
        Ok(val)
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Bool => f.write_str("bool"),
            Self::String => f.write_str("string"),
            Self::Int => f.write_str("int"),
            Self::Uint => f.write_str("uint"),
            Self::Double => f.write_str("double"),
            Self::Duration => f.write_str("duration"),
            Self::Timestamp => f.write_str("timestamp"),
            Self::IpAddress => f.write_str("ipaddress"),
            Self::List(t) => write!(f, "list<{t}>"),
            Self::Map(t) => write!(f, "map<{t}>"),
        }
    }
}

/// An `any` value as OpenFGA sees it through `structpb`: every JSON number is a double.
fn any_to_val(value: &Json) -> Box<dyn Val + '_> {
    match value {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => Box::new(CelList::from(
            items.iter().map(any_to_val).collect::<Vec<_>>(),
        )),
        Json::Object(entries) => Box::new(CelMap::from(
            entries
                .iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), any_to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "bool",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "map",
    }
}

fn expected(what: &str, found: &Json) -> String {
    match found {
        Json::Null => format!("expected {what}, but found null"),
        Json::Array(_) | Json::Object(_) => {
            format!("expected {what}, but found a {}", json_kind(found))
        }
        _ => format!("expected {what}, but found {} `{found}`", json_kind(found)),
    }
}

/// A JSON number, or a string holding one (OpenFGA parses numeric strings too).
enum Numeric {
    Int(i64),
    Uint(u64),
    Float(f64),
}

fn numeric(value: &Json, what: &str) -> Result<Numeric, String> {
    match value {
        Json::Number(n) => Ok(if let Some(i) = n.as_i64() {
            Numeric::Int(i)
        } else if let Some(u) = n.as_u64() {
            Numeric::Uint(u)
        } else {
            Numeric::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Json::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Ok(Numeric::Int(i))
            } else if let Ok(u) = t.parse::<u64>() {
                Ok(Numeric::Uint(u))
            } else {
                match t.parse::<f64>() {
                    Ok(f) if f.is_finite() => Ok(Numeric::Float(f)),
                    _ => Err(format!(
                        "expected {what}, but found the invalid numeric string `{s}`"
                    )),
                }
            }
        }
        other => Err(expected(what, other)),
    }
}

// The float-to-integer casts below only run once the value is integral and inside the target
// range, so they are exact.
fn to_int(value: &Json) -> Result<i64, String> {
    match numeric(value, "an int")? {
        Numeric::Int(i) => Ok(i),
        Numeric::Uint(u) => Err(format!("expected an int, but `{u}` is out of range")),
        Numeric::Float(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => {
            Ok(f as i64)
        }
        Numeric::Float(f) if f.fract() == 0.0 => {
            Err(format!("expected an int, but `{f}` is out of range"))
        }
        Numeric::Float(f) => Err(format!(
            "expected an int, but found the numeric value `{f}`"
        )),
    }
}

fn to_uint(value: &Json) -> Result<u64, String> {
    match numeric(value, "a uint")? {
        Numeric::Int(i) => u64::try_from(i)
            .map_err(|_| format!("expected a uint, but found the negative value `{i}`")),
        Numeric::Uint(u) => Ok(u),
        Numeric::Float(f) if f.fract() == 0.0 && f >= 0.0 && f < u64::MAX as f64 => Ok(f as u64),
        Numeric::Float(f) if f.fract() == 0.0 && f < 0.0 => Err(format!(
            "expected a uint, but found the negative value `{f}`"
        )),
        Numeric::Float(f) if f.fract() == 0.0 => {
            Err(format!("expected a uint, but `{f}` is out of range"))
        }
        Numeric::Float(f) => Err(format!(
            "expected a uint, but found the numeric value `{f}`"
        )),
    }
}

fn to_double(value: &Json) -> Result<f64, String> {
    Ok(match numeric(value, "a double")? {
        Numeric::Int(i) => i as f64,
        Numeric::Uint(u) => u as f64,
        Numeric::Float(f) => f,
    })
}

/// Parses an RFC 3339 timestamp, as Go's `time.Parse(time.RFC3339, s)` does (fractional
/// seconds allowed).
fn parse_rfc3339(s: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    let err = || format!("expected an RFC 3339 timestamp, but found `{s}`");
    if s.as_bytes().get(10) != Some(&b'T') {
        return Err(err());
    }
    chrono::DateTime::parse_from_rfc3339(s).map_err(|_| err())
}

/// Parses a Go duration string (`time.ParseDuration`): a sequence of decimal numbers, each with
/// an optional fraction and a unit among `ns`, `us` (or `µs`), `ms`, `s`, `m` and `h`, with an
/// optional sign, e.g. `1h30m`, `1.5h`, `-300ms`; `0` needs no unit.
pub(crate) fn parse_go_duration(s: &str) -> Result<chrono::Duration, String> {
    let invalid = || format!("expected a valid duration string, but found `{s}`");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(chrono::Duration::zero());
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let bytes = rest.as_bytes();
        if !(bytes[0] == b'.' || bytes[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Integer part.
        let int_len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut whole: u128 = 0;
        for b in &bytes[..int_len] {
            whole = whole * 10 + u128::from(b - b'0');
            if whole > 1 << 63 {
                return Err(invalid());
            }
        }
        rest = &rest[int_len..];
        // Fraction.
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        let mut frac_len = 0;
        if let Some(after_dot) = rest.strip_prefix('.') {
            rest = after_dot;
            frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            for b in rest[..frac_len].bytes() {
                // Like Go, ignore digits past 19: they cannot change the result.
                if scale <= 10u128.pow(18) {
                    frac = frac * 10 + u128::from(b - b'0');
                    scale *= 10;
                }
            }
            rest = &rest[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        // Unit: everything up to the next digit or dot.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += whole * unit + frac * unit / scale;
        if total > 1 << 63 {
            return Err(invalid());
        }
    }
    let nanos = if neg {
        i64::try_from(-i128::try_from(total).map_err(|_| invalid())?).map_err(|_| invalid())?
    } else {
        i64::try_from(total).map_err(|_| invalid())?
    };
    Ok(chrono::Duration::nanoseconds(nanos))
}
