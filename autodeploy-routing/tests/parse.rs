//! Parsing the `Deploy-Route-Rule` header.

mod support;

use autodeploy_core::InstanceId;
use autodeploy_routing::RouteRule;
use proptest::prelude::*;

#[test]
fn missing_header_is_the_default_rule() {
    assert_eq!(RouteRule::from_header(None), RouteRule::Default);
}

#[test]
fn seed_keywords_parse() {
    assert_eq!(RouteRule::parse(b"scale-out"), RouteRule::ScaleOut);
    assert_eq!(RouteRule::parse(b"random"), RouteRule::Random);
    assert_eq!(RouteRule::parse(b"round-robin"), RouteRule::RoundRobin);
}

#[test]
fn seed_instance_id_parses() {
    let id: InstanceId = "xykemlvy".parse().unwrap();
    assert_eq!(
        RouteRule::from_header(Some(b"xykemlvy")),
        RouteRule::Instance(id)
    );
}

#[test]
fn empty_or_blank_value_is_an_unknown_instance() {
    for raw in [&b""[..], b" ", b"\t \t"] {
        assert_eq!(RouteRule::parse(raw), RouteRule::UnknownInstance);
    }
}

#[test]
fn malformed_ids_are_unknown_instances() {
    for raw in [
        &b"xykemlv"[..],
        b"xykemlvyy",
        b"xykem-vy",
        b"xyk mlvy",
        b"xykeml\xc3\xa9",
        b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8",
        b"xykemlv\0",
        b"round_robin",
        b"scale out",
        b"random!",
    ] {
        assert_eq!(RouteRule::parse(raw), RouteRule::UnknownInstance, "{raw:?}");
    }
}

#[test]
fn huge_value_is_an_unknown_instance() {
    let mut raw = vec![b' '; 1 << 20];
    raw.extend_from_slice(b"random");
    raw.extend(std::iter::repeat_n(b'a', 1 << 20));
    assert_eq!(RouteRule::parse(&raw), RouteRule::UnknownInstance);
}

fn random_case(word: &str, flips: &[bool]) -> Vec<u8> {
    word.bytes()
        .zip(flips.iter().cycle())
        .map(|(b, &up)| if up { b.to_ascii_uppercase() } else { b })
        .collect()
}

fn padding() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop::sample::select(b" \t\r\n\x0c".to_vec()), 0..4)
}

proptest! {
    #[test]
    fn parsing_any_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let rule = RouteRule::parse(&raw);
        if let RouteRule::Instance(id) = rule {
            prop_assert!(raw.trim_ascii().eq_ignore_ascii_case(id.as_str().as_bytes()));
        }
    }

    #[test]
    fn keywords_ignore_case_and_surrounding_whitespace(
        which in 0usize..3,
        flips in proptest::collection::vec(any::<bool>(), 1..12),
        before in padding(),
        after in padding(),
    ) {
        let (word, rule) = [
            ("scale-out", RouteRule::ScaleOut),
            ("random", RouteRule::Random),
            ("round-robin", RouteRule::RoundRobin),
        ][which];
        let raw = [before, random_case(word, &flips), after].concat();
        prop_assert_eq!(RouteRule::parse(&raw), rule);
    }

    #[test]
    fn ids_parse_exactly_ignoring_case(
        id in support::any_id(),
        flips in proptest::collection::vec(any::<bool>(), 1..9),
        before in padding(),
        after in padding(),
    ) {
        let raw = [before, random_case(id.as_str(), &flips), after].concat();
        prop_assert_eq!(RouteRule::from_header(Some(&raw)), RouteRule::Instance(id));
    }
}
