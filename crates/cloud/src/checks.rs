//! Checks of plan options that every cloud's options share.

use qa_core::plan::schema;

/// A "did you mean" hint naming the candidate nearest to `word`, if one is near.
pub(crate) fn did_you_mean(word: &str, candidates: &[&str]) -> Option<String> {
    schema::nearest(word, candidates.iter().copied()).map(|c| format!("did you mean `{c}`?"))
}

/// Whether `s` is an address and a prefix length (`203.0.113.7/32`, `2001:db8::/32`).
pub(crate) fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_are_told_from_addresses() {
        for ok in [
            "127.0.0.1/32",
            "10.0.0.0/8",
            "0.0.0.0/0",
            "2001:db8::/32",
            "::1/128",
        ] {
            assert!(is_cidr(ok), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "10.0.0.0/33",
            "10.0.0/8",
            "::1/129",
            "host/24",
            "10.0.0.0/-1",
        ] {
            assert!(!is_cidr(bad), "{bad}");
        }
    }
}
