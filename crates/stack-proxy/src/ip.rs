//! Address classes for the egress guard: the egress adapter resolves a
//! target's host, calls [`is_forbidden`] on every resolved address, and
//! connects to exactly an address that passed (never re-resolving).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What kind of address an IP is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpClass {
    /// Globally routable.
    Public,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// `169.254/16`, `fe80::/10`.
    LinkLocal,
    /// Cloud instance-metadata endpoints: `169.254.169.254`, `169.254.170.2`
    /// (ECS), `100.100.100.200` (Alibaba), `fd00:ec2::254`.
    CloudMetadata,
    /// Carrier-grade NAT, `100.64/10`.
    Cgnat,
    /// `224/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18/15`, `2001:2::/48`.
    Benchmarking,
    /// `fc00::/7`.
    UniqueLocal,
    /// `fec0::/10` (deprecated site-local).
    SiteLocal,
    /// Everything else that is not globally routable: `0/8`, `192.0.0/24`,
    /// `192.88.99/24`, `240/4`, Teredo, ORCHID, discard-only, unassigned v6.
    Reserved,
}

impl IpClass {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link_local",
            Self::CloudMetadata => "cloud_metadata",
            Self::Cgnat => "cgnat",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::UniqueLocal => "unique_local",
            Self::SiteLocal => "site_local",
            Self::Reserved => "reserved",
        }
    }

    /// Classes no allow-list can open: metadata services, and addresses
    /// that are not a single host.
    pub const fn never_allowed(self) -> bool {
        matches!(
            self,
            Self::CloudMetadata | Self::Unspecified | Self::Multicast | Self::Broadcast
        )
    }
}

impl fmt::Display for IpClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

/// Classifies an address. IPv6 forms that embed an IPv4 address
/// (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`)
/// take the class of the embedded address.
pub fn classify_ip(ip: IpAddr) -> IpClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> IpClass {
    const METADATA: [[u8; 4]; 3] = [
        [169, 254, 169, 254],
        [169, 254, 170, 2],
        [100, 100, 100, 200],
    ];
    if METADATA.iter().any(|m| ip.octets() == *m) {
        return IpClass::CloudMetadata;
    }
    let table: &[([u8; 4], u32, IpClass)] = &[
        ([0, 0, 0, 0], 32, IpClass::Unspecified),
        ([255, 255, 255, 255], 32, IpClass::Broadcast),
        ([0, 0, 0, 0], 8, IpClass::Reserved),
        ([10, 0, 0, 0], 8, IpClass::Private),
        ([100, 64, 0, 0], 10, IpClass::Cgnat),
        ([127, 0, 0, 0], 8, IpClass::Loopback),
        ([169, 254, 0, 0], 16, IpClass::LinkLocal),
        ([172, 16, 0, 0], 12, IpClass::Private),
        ([192, 0, 0, 0], 24, IpClass::Reserved),
        ([192, 0, 2, 0], 24, IpClass::Documentation),
        ([192, 88, 99, 0], 24, IpClass::Reserved),
        ([192, 168, 0, 0], 16, IpClass::Private),
        ([198, 18, 0, 0], 15, IpClass::Benchmarking),
        ([198, 51, 100, 0], 24, IpClass::Documentation),
        ([203, 0, 113, 0], 24, IpClass::Documentation),
        ([224, 0, 0, 0], 4, IpClass::Multicast),
        ([240, 0, 0, 0], 4, IpClass::Reserved),
    ];
    table
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map_or(IpClass::Public, |(_, _, class)| *class)
}

fn classify_v6(ip: Ipv6Addr) -> IpClass {
    const EC2_METADATA: u128 = 0xfd00_0ec2_0000_0000_0000_0000_0000_0254;
    let bits = u128::from(ip);
    if bits == EC2_METADATA {
        return IpClass::CloudMetadata;
    }
    if ip.is_unspecified() {
        return IpClass::Unspecified;
    }
    if ip.is_loopback() {
        return IpClass::Loopback;
    }
    let low32 = Ipv4Addr::from(u32::try_from(bits & 0xffff_ffff).unwrap_or(0));
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), 64:ff9b::a.b.c.d (NAT64)
    if in_v6(ip, 0xffff_0000_0000, 96) || in_v6(ip, 0, 96) || in_v6(ip, 0x0064_ff9b << 96, 96) {
        return classify_v4(low32);
    }
    if in_v6(ip, 0x2002 << 112, 16) {
        let embedded = u32::try_from((bits >> 80) & 0xffff_ffff).unwrap_or(0);
        return classify_v4(Ipv4Addr::from(embedded));
    }
    let table: &[(u128, u32, IpClass)] = &[
        (0xff00 << 112, 8, IpClass::Multicast),
        (0xfe80 << 112, 10, IpClass::LinkLocal),
        (0xfec0 << 112, 10, IpClass::SiteLocal),
        (0xfc00 << 112, 7, IpClass::UniqueLocal),
        (0x2001_0db8 << 96, 32, IpClass::Documentation),
        (0x3fff << 112, 20, IpClass::Documentation),
        (0x2001_0002 << 96, 48, IpClass::Benchmarking),
        (0x0064_ff9b_0001 << 80, 48, IpClass::Reserved), // local-use NAT64
        (0x2001 << 112, 32, IpClass::Reserved),          // Teredo
        (0x2001_0010 << 96, 28, IpClass::Reserved),      // ORCHID
        (0x2001_0020 << 96, 28, IpClass::Reserved),      // ORCHIDv2
        (0x0100 << 112, 64, IpClass::Reserved),          // discard-only
        (0x5f00 << 112, 16, IpClass::Reserved),          // SRv6 SIDs
    ];
    if let Some((_, _, class)) = table.iter().find(|(net, p, _)| in_v6(ip, *net, *p)) {
        return *class;
    }
    // Only 2000::/3 is allocated global unicast.
    if in_v6(ip, 0x2000 << 112, 3) {
        IpClass::Public
    } else {
        IpClass::Reserved
    }
}

/// An address block, `10.0.0.0/8` or `fd00::/8`; a bare address is a /32
/// or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR block {0:?} (expected a.b.c.d/n or x::y/n)")]
pub struct CidrError(String);

impl CidrError {
    pub const fn code(&self) -> &'static str {
        "invalid_cidr"
    }
}

impl Cidr {
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    pub const fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address is compared
    /// as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => in_v4(ip, net.octets(), u32::from(self.prefix)),
            (IpAddr::V6(net), IpAddr::V6(ip)) => in_v6(ip, u128::from(net), u32::from(self.prefix)),
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let err = || CidrError(crate::redact::clip(s));
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        // std's parsers accept only dotted-quad decimal IPv4, no octal or hex.
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| err())?
            }
            Some(_) => return Err(err()),
        };
        if prefix > max {
            return Err(err());
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a comma- or whitespace-separated list (`STACK_PROXY_ALLOW_PRIVATE`).
pub fn parse_cidr_list(s: &str) -> Result<Vec<Cidr>, CidrError> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether the egress client must refuse to connect to `ip`: anything not
/// [`IpClass::Public`], unless `allow` covers it; metadata, unspecified,
/// multicast and broadcast addresses are refused even then.
pub fn is_forbidden(ip: IpAddr, allow: &[Cidr]) -> bool {
    let class = classify_ip(ip);
    match class {
        IpClass::Public => false,
        c if c.never_allowed() => true,
        _ => !allow.iter().any(|cidr| cidr.contains(ip)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("0177.0.0.1/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/".parse::<Cidr>().is_err());
        assert!("10.0.0.0/+8".parse::<Cidr>().is_err());
        assert_eq!(parse_cidr_list("10.0.0.0/8, fd00::/8").unwrap().len(), 2);
        assert_eq!(parse_cidr_list("").unwrap().len(), 0);
    }
}
