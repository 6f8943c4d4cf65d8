//! Outbound network policy: which addresses the relay may connect to.
//!
//! By default only public unicast addresses are allowed. Loopback, private,
//! shared (CGNAT), link-local (cloud metadata lives there), multicast,
//! documentation and reserved ranges are refused, including IPv4 addresses
//! embedded in IPv6 forms. The check runs on literal IPs in URLs and on every
//! address a host name resolves to, so DNS cannot point the relay inward.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::{Host, Url};

/// The policy refused an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by network policy: {host} is {ip} ({reason}); allow it with network.allow_cidrs or network.allow_private")]
pub struct Refused {
    pub host: String,
    pub ip: IpAddr,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Allow every address.
    pub allow_private: bool,
    /// Allow these networks even when `allow_private` is false.
    pub allow_cidrs: Vec<IpNet>,
}

impl NetworkPolicy {
    /// `Err(reason)` when the policy refuses `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        let Some(reason) = classify(ip) else { return Ok(()) };
        let canonical = ip.to_canonical(); // ::ffff:10.0.0.1 is 10.0.0.1 to an allowlist
        if self.allow_private
            || self.allow_cidrs.iter().any(|net| net.contains(&ip) || net.contains(&canonical))
        {
            Ok(())
        } else {
            Err(reason)
        }
    }

    /// Checks a URL whose host is an IP literal, however it is spelled: the
    /// URL parser turns `127.1`, `2130706433`, `0x7f000001` and
    /// `[::ffff:127.0.0.1]` into plain addresses first. Host names pass here;
    /// their addresses are checked after resolution.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        self.check_resolved(url.host_str().unwrap_or_default(), ip)
    }

    /// Checks one address that `host` resolved to.
    pub fn check_resolved(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        self.check(ip).map_err(|reason| Refused { host: host.to_owned(), ip, reason })
    }
}

/// Why an address is not public, or `None` for a public unicast address.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b, c, d) {
        (0, ..) => "unspecified",
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, ..) | (192, 168, ..) => "private",
        (100, 64..=127, ..) => "shared address space (CGNAT)",
        (169, 254, 169, 254) | (168, 63, 129, 16) => "cloud metadata",
        (169, 254, ..) => "link-local",
        (192, 0, 0, _) => "IETF protocol assignments",
        (192, 0, 2, _) | (198, 51, 100, _) | (203, 0, 113, _) => "documentation",
        (198, 18..=19, ..) => "benchmarking",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (translated), ::a.b.c.d
    // (compatible), 64:ff9b::a.b.c.d (NAT64)
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match segments {
        [0, 0, 0, 0, 0, 0xffff, hi, lo]
        | [0, 0, 0, 0, 0xffff, 0, hi, lo]
        | [0, 0, 0, 0, 0, 0, hi, lo]
        | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            return classify_v4(embedded(hi, lo));
        }
        // Local-use NAT64 (RFC 8215): translates to whatever the local network holds.
        [0x64, 0xff9b, 1, ..] => return Some("local-use NAT64"),
        // 6to4 carries an IPv4 address in segments 1 and 2
        [0x2002, hi, lo, ..] => return classify_v4(embedded(hi, lo)),
        _ => {}
    }
    Some(match segments[0] {
        0xfd00 if segments[1] == 0x0ec2 => "cloud metadata",
        0xfc00..=0xfdff => "unique local (private)",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        0x2001 if segments[1] == 0 => "Teredo",
        0x0100 if segments[1..4] == [0, 0, 0] => "discard-only",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> bool {
        NetworkPolicy::default().check(ip.parse().unwrap()).is_err()
    }

    #[test]
    fn refuses_inward_addresses() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "169.254.1.1",
            "168.63.129.16",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::ffff:0:7f00:1",
            "::ffff:0:a00:1",
            "64:ff9b:1::1",
            "64:ff9b:1:ffff::808:808",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "::ffff:0:101:101",
        ] {
            assert!(!refused(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn allow_private_allows_everything() {
        let policy = NetworkPolicy { allow_private: true, allow_cidrs: Vec::new() };
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy.check("169.254.169.254".parse().unwrap()).is_ok());
    }

    fn refused_url(url: &str) -> bool {
        NetworkPolicy::default().check_url(&Url::parse(url).unwrap()).is_err()
    }

    #[test]
    fn odd_spellings_of_inward_addresses_are_refused() {
        for url in [
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://0/",
            "http://169.254.169.254/",
            "http://[fd00:ec2::254]/",
            "http://0xa9.0xfe.0xa9.0xfe/",
        ] {
            assert!(refused_url(url), "{url} should be refused");
        }
        assert!(!refused_url("http://example.com/"), "names are checked after resolution");
        assert!(!refused_url("http://1.1.1.1/"));
    }

    proptest::proptest! {
        #[test]
        fn every_private_v4_address_is_refused_plain_mapped_and_as_a_number(
            (a, b) in proptest::prop_oneof![
                (proptest::strategy::Just(127u8), 0u8..=255),
                (proptest::strategy::Just(10u8), 0u8..=255),
                (proptest::strategy::Just(172u8), 16u8..=31),
                (proptest::strategy::Just(192u8), proptest::strategy::Just(168u8)),
                (proptest::strategy::Just(169u8), proptest::strategy::Just(254u8)),
                (proptest::strategy::Just(100u8), 64u8..=127),
            ],
            c in 0u8..=255,
            d in 0u8..=255,
        ) {
            let v4 = Ipv4Addr::new(a, b, c, d);
            proptest::prop_assert!(refused(&v4.to_string()));
            proptest::prop_assert!(refused(&v4.to_ipv6_mapped().to_string()));
            let spellings = [
                format!("http://{}/", u32::from(v4)),
                format!("http://0x{:x}/", u32::from(v4)),
                format!("http://[{}]/", v4.to_ipv6_mapped()),
            ];
            for url in spellings {
                proptest::prop_assert!(refused_url(&url), "{} should be refused", url);
            }
        }

        #[test]
        fn mapped_addresses_are_judged_like_their_ipv4(raw in proptest::num::u32::ANY) {
            let v4 = Ipv4Addr::from(raw);
            proptest::prop_assert_eq!(classify(IpAddr::V4(v4)), classify(IpAddr::V6(v4.to_ipv6_mapped())));
        }
    }

    #[test]
    fn an_allowlist_opens_only_its_networks() {
        let policy =
            NetworkPolicy { allow_private: false, allow_cidrs: vec!["10.1.0.0/16".parse().unwrap()] };
        assert!(policy.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(policy.check("::ffff:10.1.2.3".parse().unwrap()).is_ok());
        assert!(policy.check("10.2.0.1".parse().unwrap()).is_err());
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_err());
    }
}
