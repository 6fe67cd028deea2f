//! The target-URL policy: the pure half of the SSRF guard.
//!
//! [`parse_target`] accepts a deliberately small subset of URLs: absolute
//! `http`/`https`, a DNS host name on the caller's allow-list, an optional
//! port, a path and a query, all printable ASCII. Everything a parser
//! differential could hide in (userinfo, IP literals in any notation,
//! encoded slashes and dots, dot segments, backslashes, fragments) is
//! refused rather than interpreted. The egress adapter must build its
//! request from the returned [`Target`], never from the original string, so
//! what was checked is what is sent.

use std::fmt;
use std::net::Ipv4Addr;

use stack_core::ErrorCode;

/// Longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Longest host name (RFC 1035).
const MAX_HOST_BYTES: usize = 253;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }

    pub const fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

/// A checked, normalised upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Lower-case DNS name, one of the allowed hosts.
    pub host: String,
    /// Explicit or the scheme's default.
    pub port: u16,
    /// Starts with `/`; unreserved characters decoded, other escapes with
    /// upper-case hex; no dot segments, no empty segments but a trailing `/`.
    pub path: String,
    /// The query string without `?`, as given (validated), `None` if absent.
    pub query: Option<String>,
}

impl Target {
    /// `scheme://host[:port]`, the port only when not the default.
    pub fn origin(&self) -> String {
        if self.port == self.scheme.default_port() {
            format!("{}://{}", self.scheme.as_str(), self.host)
        } else {
            format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port)
        }
    }

    /// The request target of the HTTP request line.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// The canonical URL to send.
    pub fn url(&self) -> String {
        format!("{}{}", self.origin(), self.path_and_query())
    }

    /// The query decoded into pairs (`+` is a space), in order; repeated
    /// keys are kept. Keys without `=` get an empty value.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let Some(q) = &self.query else {
            return Vec::new();
        };
        q.split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (form_decode(k), form_decode(v))
            })
            .collect()
    }

    /// Appends `name=value` pairs (the `query` map of a proxy call),
    /// percent-encoding them.
    pub fn append_query<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut q = self.query.take().unwrap_or_default();
        for (k, v) in pairs {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(&form_encode(k));
            q.push('=');
            q.push_str(&form_encode(v));
        }
        self.query = (!q.is_empty()).then_some(q);
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// Why a target URL was refused. Messages never echo the URL (its query may
/// hold secrets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlRejection {
    #[error("the URL is empty")]
    Empty,
    #[error("the URL is longer than 8192 bytes")]
    TooLong,
    #[error("the URL holds a character outside printable ASCII, a space or a backslash")]
    InvalidCharacter,
    #[error("the URL is not absolute (expected http:// or https://)")]
    NotAbsolute,
    #[error("only http and https URLs are allowed")]
    UnsupportedScheme,
    #[error("this service is reached over https only")]
    InsecureScheme,
    #[error("the URL carries credentials (user@host)")]
    Userinfo,
    #[error("the URL has no host")]
    MissingHost,
    #[error("the host is not a valid DNS name")]
    InvalidHost,
    #[error("IP-address hosts are not allowed; use the service's host name")]
    IpLiteral,
    #[error("the host is not one this service's credential may be sent to")]
    HostNotAllowed,
    #[error("the port is invalid")]
    InvalidPort,
    #[error("the URL has a fragment")]
    Fragment,
    #[error("the path holds an encoded slash or backslash")]
    EncodedSlash,
    #[error("the path holds an encoded dot")]
    EncodedDot,
    #[error("the URL holds an invalid percent-escape")]
    BadPercentEncoding,
    #[error("the path holds a . or .. segment")]
    DotSegment,
    #[error("the path holds an empty segment (//)")]
    EmptySegment,
}

impl UrlRejection {
    /// A stable machine code.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Empty => "url_empty",
            Self::TooLong => "url_too_long",
            Self::InvalidCharacter => "url_invalid_character",
            Self::NotAbsolute => "url_not_absolute",
            Self::UnsupportedScheme => "url_unsupported_scheme",
            Self::InsecureScheme => "url_insecure_scheme",
            Self::Userinfo => "url_userinfo",
            Self::MissingHost => "url_missing_host",
            Self::InvalidHost => "url_invalid_host",
            Self::IpLiteral => "url_ip_literal",
            Self::HostNotAllowed => "url_host_not_allowed",
            Self::InvalidPort => "url_invalid_port",
            Self::Fragment => "url_fragment",
            Self::EncodedSlash => "url_encoded_slash",
            Self::EncodedDot => "url_encoded_dot",
            Self::BadPercentEncoding => "url_bad_percent_encoding",
            Self::DotSegment => "url_dot_segment",
            Self::EmptySegment => "url_empty_segment",
        }
    }

    /// A host outside the service is a denial (403); any other malformed URL
    /// is a validation error (400).
    pub const fn error_code(&self) -> ErrorCode {
        match self {
            Self::HostNotAllowed | Self::IpLiteral => ErrorCode::Forbidden,
            _ => ErrorCode::ValidationError,
        }
    }
}

/// Parses and checks an upstream URL against the hosts the service's
/// credential may be sent to (exact, case-insensitive).
pub fn parse_target(url: &str, allowed_hosts: &[String]) -> Result<Target, UrlRejection> {
    if url.is_empty() {
        return Err(UrlRejection::Empty);
    }
    if url.len() > MAX_URL_BYTES {
        return Err(UrlRejection::TooLong);
    }
    if !url.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        return Err(UrlRejection::InvalidCharacter);
    }
    if url.contains('#') {
        return Err(UrlRejection::Fragment);
    }
    let (scheme, rest) = split_scheme(url)?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (host, port) = parse_authority(authority, scheme)?;
    if !allowed_hosts
        .iter()
        .any(|a| a.trim().eq_ignore_ascii_case(&host))
    {
        return Err(UrlRejection::HostNotAllowed);
    }
    let (raw_path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let path = normalise_path(raw_path)?;
    let query = match query {
        Some(q) => {
            check_query(q)?;
            (!q.is_empty()).then(|| q.to_owned())
        }
        None => None,
    };
    Ok(Target {
        scheme,
        host,
        port,
        path,
        query,
    })
}

fn split_scheme(url: &str) -> Result<(Scheme, &str), UrlRejection> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(UrlRejection::NotAbsolute);
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err(UrlRejection::NotAbsolute);
    }
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else {
        return Err(UrlRejection::UnsupportedScheme);
    };
    let rest = rest.strip_prefix("//").ok_or(UrlRejection::NotAbsolute)?;
    Ok((scheme, rest))
}

fn parse_authority(authority: &str, scheme: Scheme) -> Result<(String, u16), UrlRejection> {
    if authority.contains('@') {
        return Err(UrlRejection::Userinfo);
    }
    if authority.is_empty() {
        return Err(UrlRejection::MissingHost);
    }
    if authority.starts_with('[') {
        return Err(UrlRejection::IpLiteral);
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(UrlRejection::MissingHost);
    }
    if host.contains(':') {
        // A bare IPv6 address, or a second colon.
        return Err(UrlRejection::IpLiteral);
    }
    let host = host.to_ascii_lowercase();
    if is_ipv4_like(&host) {
        return Err(UrlRejection::IpLiteral);
    }
    if !is_dns_name(&host) {
        return Err(UrlRejection::InvalidHost);
    }
    let port = match port {
        None => scheme.default_port(),
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UrlRejection::InvalidPort);
            }
            match p.parse::<u16>() {
                Ok(n) if n != 0 => n,
                _ => return Err(UrlRejection::InvalidPort),
            }
        }
    };
    Ok((host, port))
}

/// Any host a URL parser could read as IPv4: WHATWG treats a host whose
/// last label is a number (decimal, `0x` hex or octal) as an IPv4 address,
/// so `2130706433`, `0177.0.0.1`, `0x7f.1` and `127.1` all count. No real
/// top-level domain is numeric, so nothing legitimate is lost.
pub fn is_ipv4_like(host: &str) -> bool {
    if host.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let last = trimmed.rsplit('.').next().unwrap_or(trimmed);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    let lower = last.to_ascii_lowercase();
    lower
        .strip_prefix("0x")
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Lower-case letters, digits and inner hyphens, labels of 1–63 bytes, at
/// least two labels, at most 253 bytes, no trailing dot.
pub fn is_dns_name(host: &str) -> bool {
    if host.is_empty() || host.len() > MAX_HOST_BYTES {
        return false;
    }
    let mut labels = 0usize;
    for label in host.split('.') {
        labels += 1;
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return false;
        }
    }
    labels >= 2
}

fn hex_val(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// RFC 3986 `pchar` minus `%` (escapes are handled separately).
fn is_path_byte(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@".contains(&b)
}

/// Decodes escapes of unreserved characters, upper-cases the hex of the
/// rest, and refuses encoded `/`, `\`, `.`, NUL, double-encoded forms of
/// those, dot segments and empty segments.
fn normalise_path(raw: &str) -> Result<String, UrlRejection> {
    if raw.is_empty() {
        return Ok("/".to_owned());
    }
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'/' {
            out.push('/');
            i += 1;
            continue;
        }
        if b != b'%' {
            if !is_path_byte(b) {
                return Err(UrlRejection::InvalidCharacter);
            }
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex_val),
            bytes.get(i + 2).copied().and_then(hex_val),
        ) else {
            return Err(UrlRejection::BadPercentEncoding);
        };
        let decoded = hi * 16 + lo;
        match decoded {
            b'/' | b'\\' => return Err(UrlRejection::EncodedSlash),
            b'.' => return Err(UrlRejection::EncodedDot),
            0 => return Err(UrlRejection::BadPercentEncoding),
            b'%' => {
                // `%252f` decodes to `%2f` at an upstream that decodes twice.
                let next = (
                    bytes.get(i + 3).copied().and_then(hex_val),
                    bytes.get(i + 4).copied().and_then(hex_val),
                );
                if let (Some(h2), Some(l2)) = next {
                    match h2 * 16 + l2 {
                        b'/' | b'\\' => return Err(UrlRejection::EncodedSlash),
                        b'.' => return Err(UrlRejection::EncodedDot),
                        0 => return Err(UrlRejection::BadPercentEncoding),
                        _ => {}
                    }
                }
                out.push_str("%25");
            }
            d if is_unreserved(d) => out.push(char::from(d)),
            d => out.push_str(&format!("%{d:02X}")),
        }
        i += 3;
    }
    if !out.starts_with('/') {
        return Err(UrlRejection::InvalidCharacter);
    }
    let segments: Vec<&str> = out.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (n, seg) in segments.iter().enumerate() {
        if *seg == "." || *seg == ".." {
            return Err(UrlRejection::DotSegment);
        }
        if seg.is_empty() && n != last {
            return Err(UrlRejection::EmptySegment);
        }
    }
    Ok(out)
}

fn check_query(q: &str) -> Result<(), UrlRejection> {
    let bytes = q.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let ok = bytes.get(i + 1).copied().and_then(hex_val).is_some()
                && bytes.get(i + 2).copied().and_then(hex_val).is_some();
            if !ok {
                return Err(UrlRejection::BadPercentEncoding);
            }
            i += 3;
            continue;
        }
        // pchar, `/`, `?`, and the `[]` that APIs such as Stripe use unencoded.
        if !(is_path_byte(b) || b"/?[]".contains(&b)) {
            return Err(UrlRejection::InvalidCharacter);
        }
        i += 1;
    }
    Ok(())
}

fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex_val),
                bytes.get(i + 2).copied().and_then(hex_val),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        vec!["slack.com".into()]
    }

    #[test]
    fn normalises_unreserved_escapes_and_hex_case() {
        let t = parse_target("https://Slack.COM/api/ch%61t%2dx%3a?a=1", &hosts()).unwrap();
        assert_eq!(t.host, "slack.com");
        assert_eq!(t.path, "/api/chat-x%3A");
        assert_eq!(t.query.as_deref(), Some("a=1"));
        assert_eq!(t.port, 443);
        assert_eq!(t.url(), "https://slack.com/api/chat-x%3A?a=1");
    }

    #[test]
    fn query_pairs_and_append() {
        let mut t =
            parse_target("https://slack.com/x?channel=C1&text=a+b%21&flag", &hosts()).unwrap();
        assert_eq!(
            t.query_pairs(),
            vec![
                ("channel".to_owned(), "C1".to_owned()),
                ("text".to_owned(), "a b!".to_owned()),
                ("flag".to_owned(), String::new())
            ]
        );
        t.append_query([("limit", "10 & more")]);
        assert_eq!(
            t.query.as_deref(),
            Some("channel=C1&text=a+b%21&flag&limit=10%20%26%20more")
        );
    }

    #[test]
    fn double_encoding_is_refused() {
        assert_eq!(
            parse_target("https://slack.com/a%252fb", &hosts()),
            Err(UrlRejection::EncodedSlash)
        );
        assert_eq!(
            parse_target("https://slack.com/a%252e%252e/b", &hosts()),
            Err(UrlRejection::EncodedDot)
        );
        assert!(parse_target("https://slack.com/100%25", &hosts()).is_ok());
    }
}
