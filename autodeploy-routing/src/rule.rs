//! The `Deploy-Route-Rule` header and what each of its values means.

use autodeploy_core::InstanceId;

/// The request header that selects a [`RouteRule`], in the lowercase form HTTP/2 requires.
pub const RULE_HEADER: &str = "deploy-route-rule";

/// The response header that names the instance that served a request, so a client can pin its
/// following calls to it with [`RULE_HEADER`].
pub const TARGET_HEADER: &str = "deploy-route-target";

/// How one request asks to be routed, parsed from the `Deploy-Route-Rule` header.
///
/// Parsing never fails and never panics: every byte string maps to exactly one rule, and a
/// value that is neither a keyword nor a well-formed instance id becomes
/// [`RouteRule::UnknownInstance`], which always decides 1006. See [`RouteRule::parse`] for the
/// exact treatment of whitespace, case and empty values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RouteRule {
    /// No header: use the least-loaded ready instance, cold-start one when none runs, and scale
    /// out under load up to the cap.
    #[default]
    Default,
    /// `scale-out`: start a new instance for this request (1007 at the cap).
    ScaleOut,
    /// `random`: a uniformly chosen ready instance (1006 when none).
    Random,
    /// `round-robin`: the ready instances in id order, one after another (1006 when none).
    RoundRobin,
    /// A well-formed instance id: exactly that ready instance (1006 when it is not ready).
    Instance(InstanceId),
    /// Any other value (empty, wrong length, characters outside `[a-z0-9]`, non-UTF-8): an id
    /// no instance can have, so the decision is always 1006.
    UnknownInstance,
}

impl RouteRule {
    /// The rule for a request whose `Deploy-Route-Rule` header is `value` (`None`: no header).
    ///
    /// With several header lines, pass the first (what `http::HeaderMap::get` returns).
    pub fn from_header(value: Option<&[u8]>) -> Self {
        value.map_or(Self::Default, Self::parse)
    }

    /// The rule for one header value, given as raw bytes (which may be non-UTF-8, huge, or hold
    /// control characters). Never panics; runs in time proportional to the leading and trailing
    /// whitespace at most.
    ///
    /// - Leading and trailing ASCII whitespace is ignored (`" random\t"` is `random`); inner
    ///   whitespace is not (`"round robin"` is an unknown id).
    /// - ASCII case is ignored for the whole value: keywords (`Random`, `SCALE-OUT`) and ids
    ///   (`XYKEMLVY` is `xykemlvy`). Ids are generated lowercase from `[a-z0-9]`, so folding
    ///   can never make two ids collide.
    /// - An empty or whitespace-only value is [`RouteRule::UnknownInstance`] (1006), not the
    ///   default: a client that sends the header means to choose, and an empty choice (say, an
    ///   unset template variable) must fail loudly rather than land on some other instance.
    /// - Any other value that is not a well-formed [`InstanceId`] is
    ///   [`RouteRule::UnknownInstance`].
    pub fn parse(raw: &[u8]) -> Self {
        let value = raw.trim_ascii();
        // The longest keyword, `round-robin`, has 11 bytes; anything longer is no keyword or
        // id, and the bound keeps the lowercase copy below on the stack.
        let mut folded = [0u8; 11];
        let Some(folded) = folded.get_mut(..value.len()) else {
            return Self::UnknownInstance;
        };
        folded.copy_from_slice(value);
        folded.make_ascii_lowercase();
        match &*folded {
            b"scale-out" => Self::ScaleOut,
            b"random" => Self::Random,
            b"round-robin" => Self::RoundRobin,
            id => InstanceId::from_bytes(id).map_or(Self::UnknownInstance, Self::Instance),
        }
    }
}

impl From<InstanceId> for RouteRule {
    fn from(id: InstanceId) -> Self {
        Self::Instance(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_ignore_case_and_outer_whitespace() {
        assert_eq!(RouteRule::parse(b"scale-out"), RouteRule::ScaleOut);
        assert_eq!(RouteRule::parse(b" Random\t"), RouteRule::Random);
        assert_eq!(RouteRule::parse(b"ROUND-ROBIN"), RouteRule::RoundRobin);
        assert_eq!(RouteRule::parse(b"round robin"), RouteRule::UnknownInstance);
    }

    #[test]
    fn ids_are_folded_to_lowercase() {
        let id: InstanceId = "xykemlvy".parse().unwrap();
        assert_eq!(RouteRule::parse(b"xykemlvy"), RouteRule::Instance(id));
        assert_eq!(RouteRule::parse(b" XYKEMLVY "), RouteRule::Instance(id));
    }

    #[test]
    fn no_header_is_default_but_empty_header_is_unknown() {
        assert_eq!(RouteRule::from_header(None), RouteRule::Default);
        assert_eq!(
            RouteRule::from_header(Some(b"")),
            RouteRule::UnknownInstance
        );
        assert_eq!(
            RouteRule::from_header(Some(b" \t ")),
            RouteRule::UnknownInstance
        );
    }
}
