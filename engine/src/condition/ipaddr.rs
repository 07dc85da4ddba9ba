//! OpenFGA's `ipaddress` condition type: a CEL value parsed from a string, comparable for
//! equality, built in expressions with `ipaddress("10.0.0.1")` and tested against a network
//! with the member function `addr.in_cidr("10.0.0.0/8")`.

use std::any::Any;
use std::net::{IpAddr, Ipv6Addr};

use cel::common::types::{CelBool, CelString, STRING_TYPE, Type};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

/// The CEL type of IP addresses, named as in OpenFGA.
pub(crate) static IPADDRESS_TYPE: Type = Type::new_unspecified_type("IPAddress");

/// An IP address, with the zone of a scoped IPv6 address (`fe80::1%eth0`) if any, as Go's
/// `netip.Addr` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpAddress {
    addr: IpAddr,
    zone: Option<Box<str>>,
}

impl IpAddress {
    /// Parses an IPv4 or IPv6 address; `None` if it is not well formed.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        if let Some((addr, zone)) = s.split_once('%') {
            if zone.is_empty() {
                return None;
            }
            let addr: Ipv6Addr = addr.parse().ok()?;
            return Some(Self {
                addr: IpAddr::V6(addr),
                zone: Some(zone.into()),
            });
        }
        s.parse().ok().map(|addr| Self { addr, zone: None })
    }

    /// Whether the address is inside the network `cidr`; `None` if `cidr` is malformed. An
    /// address never matches a network of the other family, and a zoned address matches none.
    pub(crate) fn in_cidr(&self, cidr: &str) -> Option<bool> {
        let net: ipnet::IpNet = cidr.parse().ok()?;
        Some(self.zone.is_none() && net.contains(&self.addr))
    }
}

impl Val for IpAddress {
    fn get_type(&self) -> &Type {
        &IPADDRESS_TYPE
    }

    fn cel_type() -> &'static Type {
        &IPADDRESS_TYPE
    }

    fn equals(&self, other: &dyn Val) -> bool {
        other.downcast_ref::<IpAddress>().is_some_and(|o| o == self)
    }

    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(self.clone())
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

impl StaticVal for IpAddress {}

/// Declares `ipaddress(string)` and `IPAddress.in_cidr(string)` on `env`.
pub(crate) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload(
        "ipaddress",
        "string_to_ipaddress",
        vec![STRING_TYPE],
        ipaddress,
    )?;
    env.add_member_overload(
        "in_cidr",
        "ipaddr_in_cidr",
        IPADDRESS_TYPE.to_owned(),
        vec![STRING_TYPE],
        in_cidr,
    )
}

/// `ipaddress("192.168.0.1")`.
fn ipaddress<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let s = string_arg(&args, 0, "ipaddress")?;
    IpAddress::parse(s).map(CowVal::owned).ok_or_else(|| {
        ExecutionError::function_error(
            "ipaddress",
            format!("`{s}` is not a well-formed IP address"),
        )
    })
}

/// `addr.in_cidr("192.168.0.0/24")`.
fn in_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let addr = args
        .first()
        .and_then(|a| a.downcast_ref::<IpAddress>())
        .ok_or_else(|| {
            ExecutionError::function_error("in_cidr", "an ipaddress receiver is required")
        })?;
    let cidr = string_arg(&args, 1, "in_cidr")?;
    let inside = addr.in_cidr(cidr).ok_or_else(|| {
        ExecutionError::function_error("in_cidr", format!("`{cidr}` is a malformed CIDR string"))
    })?;
    Ok(CowVal::owned(CelBool::from(inside)))
}

fn string_arg<'a>(
    args: &'a [CowVal<'_, '_>],
    i: usize,
    function: &str,
) -> Result<&'a str, ExecutionError> {
    args.get(i)
        .and_then(|a| a.downcast_ref::<CelString>())
        .map(CelString::inner)
        .ok_or_else(|| ExecutionError::function_error(function, "a string argument is required"))
}
