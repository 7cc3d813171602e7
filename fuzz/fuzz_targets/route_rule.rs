//! `Deploy-Route-Rule` values as raw header bytes: any bytes are a rule, never a panic.
#![no_main]

use autodeploy_routing::RouteRule;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rule = RouteRule::parse(data);
    assert_eq!(rule, RouteRule::from_header(Some(data)));
});
