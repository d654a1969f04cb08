//! The network wire contract: a sandbox's egress policy (`network` on create, `GET/PUT
//! /v1/sandboxes/{id}/network`) and exposed ports (`POST/DELETE /v1/sandboxes/{id}/ports/{port}`).
//!
//! Policy validation lives here, once: the daemon calls [`NetworkPolicy::validate`] before anything is
//! applied, and SDKs may call it to fail early. Entries are parsed into [`Rule`]s, so that the daemon never
//! re-parses strings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Most entries `allow_out` and `deny_out` may hold together.
pub const MAX_POLICY_ENTRIES: usize = 1000;
/// Longest domain name (RFC 1035, without the trailing dot).
pub const MAX_DOMAIN_LEN: usize = 253;

/// What a sandbox may reach when no rule names the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Egress {
    /// Everything except `deny_out` (and what the daemon always denies).
    #[default]
    Allow,
    /// Nothing except `allow_out`: an allow-list.
    Deny,
}

impl Egress {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl std::str::FromStr for Egress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            other => Err(format!("egress {other:?}: expected \"allow\" or \"deny\"")),
        }
    }
}

/// A sandbox's outbound network policy. `allow_out` wins over `deny_out`; `egress: "deny"` with an
/// `allow_out` list is an allow-list. Entries are CIDRs (`10.0.0.0/8`, `2001:db8::/32`), single
/// addresses, domain names (`pypi.org`: that name only) or wildcards (`*.github.com`: every name below
/// it, not the name itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// The default for destinations no rule names; the daemon's `--default-egress` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Egress>,
    #[serde(default)]
    pub allow_out: Vec<String>,
    #[serde(default)]
    pub deny_out: Vec<String>,
}

/// One parsed policy entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cidr {
    V4(Ipv4Addr, u8),
    V6(Ipv6Addr, u8),
}

impl Cidr {
    /// The first and last address of the block, as integers of the family's width.
    pub fn range_v4(&self) -> Option<(u32, u32)> {
        match *self {
            Self::V4(a, len) => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let start = u32::from(a) & mask;
                Some((start, start | !mask))
            }
            Self::V6(..) => None,
        }
    }

    pub fn range_v6(&self) -> Option<(u128, u128)> {
        match *self {
            Self::V6(a, len) => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                let start = u128::from(a) & mask;
                Some((start, start | !mask))
            }
            Self::V4(..) => None,
        }
    }

    /// Parses `ADDR` or `ADDR/LEN`. Host bits set below the prefix are refused (`10.0.0.1/8` is more
    /// likely a typo than a wish for `10.0.0.0/8`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && !l.starts_with('+') => n,
                _ => return Err(format!("prefix length {l:?} must be 0-{max}")),
            },
        };
        let cidr = match ip {
            IpAddr::V4(a) => Self::V4(a, len),
            IpAddr::V6(a) => Self::V6(a, len),
        };
        let host_bits = match (cidr, ip) {
            (Self::V4(..), IpAddr::V4(a)) => {
                cidr.range_v4().is_some_and(|(s, _)| s != u32::from(a))
            }
            (Self::V6(..), IpAddr::V6(a)) => {
                cidr.range_v6().is_some_and(|(s, _)| s != u128::from(a))
            }
            _ => false,
        };
        if host_bits {
            return Err(format!(
                "{s:?} has bits set after the /{len} prefix (did you mean the network address?)"
            ));
        }
        Ok(cidr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V4(a, l) => write!(f, "{a}/{l}"),
            Self::V6(a, l) => write!(f, "{a}/{l}"),
        }
    }
}

/// A parsed `allow_out` / `deny_out` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rule {
    Cidr(Cidr),
    /// A domain name, lower case, no trailing dot: that name only.
    Domain(String),
    /// `*.example.com`, stored as `example.com`: every name strictly below it.
    Wildcard(String),
}

impl Rule {
    /// Parses one entry; the error names what is wrong with it.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let e = entry.trim();
        if e.is_empty() {
            return Err("an empty entry".into());
        }
        if e == "*" {
            return Err(
                "\"*\" is not an entry: use \"egress\": \"allow\" (or 0.0.0.0/0 and ::/0)".into(),
            );
        }
        if e.contains('/') || e.contains(':') || e.parse::<Ipv4Addr>().is_ok() {
            return Cidr::parse(e).map(Rule::Cidr);
        }
        if let Some(rest) = e.strip_prefix("*.") {
            return valid_domain(rest).map(Rule::Wildcard);
        }
        if e.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(format!(
                "{e:?} is neither an IPv4 address nor a domain name"
            ));
        }
        valid_domain(e).map(Rule::Domain)
    }

    /// Whether `name` (lower case, no trailing dot) is matched by this rule.
    pub fn matches_name(&self, name: &str) -> bool {
        match self {
            Self::Cidr(_) => false,
            Self::Domain(d) => d == name,
            Self::Wildcard(d) => {
                name.len() > d.len() + 1
                    && name.ends_with(d.as_str())
                    && name.as_bytes()[name.len() - d.len() - 1] == b'.'
            }
        }
    }
}

fn valid_domain(d: &str) -> Result<String, String> {
    let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
    if d.is_empty() || d.len() > MAX_DOMAIN_LEN {
        return Err(format!(
            "{d:?} is not a domain name (1-{MAX_DOMAIN_LEN} characters)"
        ));
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "{d:?} is not a domain name: give a full name such as example.com"
        ));
    }
    for l in &labels {
        let ok = !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "{d:?} is not a domain name: label {l:?} must be 1-63 letters, digits, '-' or '_', not \
                 starting or ending with '-' (wildcards only as a leading \"*.\")"
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{d:?} is not a domain name nor an IP address"));
    }
    Ok(d)
}

/// A validated policy, as the daemon applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPolicy {
    pub egress: Egress,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

impl ParsedPolicy {
    /// The CIDRs of `rules`.
    pub fn cidrs(rules: &[Rule]) -> impl Iterator<Item = Cidr> + '_ {
        rules.iter().filter_map(|r| match r {
            Rule::Cidr(c) => Some(*c),
            _ => None,
        })
    }

    /// Whether any domain rule names `name` in `rules`.
    pub fn names(rules: &[Rule], name: &str) -> bool {
        rules.iter().any(|r| r.matches_name(name))
    }

    /// Whether the policy has domain rules at all (then the daemon's resolver pins answers).
    pub fn has_domains(&self) -> bool {
        self.allow
            .iter()
            .chain(&self.deny)
            .any(|r| !matches!(r, Rule::Cidr(_)))
    }
}

impl NetworkPolicy {
    /// Checks every entry and the size; the error names the first bad entry (with its list and index).
    /// `default_egress` fills a missing `egress`.
    pub fn validate(&self, default_egress: Egress) -> Result<ParsedPolicy, String> {
        let total = self.allow_out.len() + self.deny_out.len();
        if total > MAX_POLICY_ENTRIES {
            return Err(format!(
                "network policy has {total} entries; at most {MAX_POLICY_ENTRIES} (allow_out and deny_out together)"
            ));
        }
        let parse = |list: &[String], what: &str| -> Result<Vec<Rule>, String> {
            list.iter()
                .enumerate()
                .map(|(i, e)| {
                    Rule::parse(e).map_err(|why| format!("network.{what}[{i}] {e:?}: {why}"))
                })
                .collect()
        };
        Ok(ParsedPolicy {
            egress: self.egress.unwrap_or(default_egress),
            allow: parse(&self.allow_out, "allow_out")?,
            deny: parse(&self.deny_out, "deny_out")?,
        })
    }
}

/// Body of `POST /v1/sandboxes/{id}/ports/{port}`. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExposePortRequest {
    /// Open to anyone who has the URL (default `false`: the port-scoped token is needed).
    #[serde(default)]
    pub public: bool,
    /// Seconds the returned token stays valid (default: until the port is closed or the sandbox deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// Answer of `POST /v1/sandboxes/{id}/ports/{port}` and an entry of `GET /v1/sandboxes/{id}/ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExposedPort {
    pub port: u16,
    /// `http://{port}-{id}.{preview-domain}[:listen-port]/`.
    pub url: String,
    pub public: bool,
    /// The port-scoped token (header `X-Sandpit-Token`, or `?sandpit_token=` once in a browser). Only in
    /// the answer that created it: the daemon keeps a hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// RFC 3339; none: until the port is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// Body of `GET /v1/sandboxes/{id}/ports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PortList {
    pub ports: Vec<ExposedPort>,
}

/// Header carrying a port-scoped token.
pub const PORT_TOKEN_HEADER: &str = "x-sandpit-token";
/// Query parameter carrying a port-scoped token once (answered with a cookie).
pub const PORT_TOKEN_PARAM: &str = "sandpit_token";
/// The cookie a browser gets for a preview host.
pub const PORT_TOKEN_COOKIE: &str = "sandpit_token";

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> NetworkPolicy {
        NetworkPolicy {
            egress: None,
            allow_out: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny_out: deny.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn entries_parse() {
        assert_eq!(
            Rule::parse("10.0.0.0/8").unwrap(),
            Rule::Cidr(Cidr::V4(Ipv4Addr::new(10, 0, 0, 0), 8))
        );
        assert_eq!(
            Rule::parse("1.2.3.4").unwrap(),
            Rule::Cidr(Cidr::V4(Ipv4Addr::new(1, 2, 3, 4), 32))
        );
        assert!(matches!(
            Rule::parse("fc00::/7").unwrap(),
            Rule::Cidr(Cidr::V6(_, 7))
        ));
        assert_eq!(
            Rule::parse("PyPI.org.").unwrap(),
            Rule::Domain("pypi.org".into())
        );
        assert_eq!(
            Rule::parse("*.github.com").unwrap(),
            Rule::Wildcard("github.com".into())
        );
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1/8",
            "300.1.1.1",
            "1.2.3",
            "exa mple.com",
            "*.*.com",
            "a.*.com",
            "-x.com",
            "localhost",
            "*",
            "",
            "fc00::/129",
            "10.0.0.0/-1",
        ] {
            let err = policy(&["1.1.1.1", bad], &[])
                .validate(Egress::Allow)
                .unwrap_err();
            assert!(err.contains("allow_out[1]"), "{bad}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn too_many_entries() {
        let many: Vec<String> = (0..1001)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect();
        let p = NetworkPolicy {
            egress: None,
            allow_out: many,
            deny_out: vec![],
        };
        assert!(
            p.validate(Egress::Allow)
                .unwrap_err()
                .contains("1001 entries")
        );
    }

    #[test]
    fn names_match() {
        let w = Rule::parse("*.example.com").unwrap();
        assert!(w.matches_name("a.example.com"));
        assert!(w.matches_name("b.a.example.com"));
        assert!(!w.matches_name("example.com"));
        assert!(!w.matches_name("badexample.com"));
        let d = Rule::parse("example.com").unwrap();
        assert!(d.matches_name("example.com"));
        assert!(!d.matches_name("a.example.com"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<NetworkPolicy, _> =
            serde_json::from_str(r#"{"egress":"deny","allowout":[]}"#);
        assert!(r.is_err());
        let r: Result<NetworkPolicy, _> = serde_json::from_str(r#"{"egress":"maybe"}"#);
        assert!(r.is_err());
    }
}
