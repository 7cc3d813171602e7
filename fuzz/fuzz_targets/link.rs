//! The path router: a request path is a link to exactly the deployment it names, or no link.
#![no_main]

use autodeploy_proxy::link::split;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    match split(path) {
        Some((id, forwarded)) => {
            assert!(!id.contains('/'));
            assert!(forwarded.starts_with('/'));
            let rebuilt = format!("/d/{id}{forwarded}");
            assert!(rebuilt == path || (forwarded == "/" && path == format!("/d/{id}")));
        }
        None => assert!(!path.starts_with("/d/")),
    }
});
