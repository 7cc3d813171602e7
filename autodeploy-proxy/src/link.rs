//! The path-style link: `/d/{deployment}/{rest}` names a deployment and the path its instance
//! sees. Pure and total, so it is fuzzed (`fuzz/`) and property-tested on its own.

/// Splits a request path into the deployment id and the path forwarded to the instance:
/// `/d/files/v1/x` is `("files", "/v1/x")`, `/d/files` is `("files", "/")`. `None` when the
/// path is not a link (it does not start with `/d/`).
///
/// Nothing is decoded or normalised: the id is the raw text up to the next `/`, so
/// `/d/../x`, `/d/a%2Fb/` or `/d//a/` name the deployments `..`, `a%2Fb` and `` (none of
/// which can exist: ids are `[a-z0-9-]`), and dot segments after the id stay inside the
/// deployment's own path. A link can only ever reach the deployment it names.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/d/")?;
    Some(match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn links_split_into_id_and_forwarded_path() {
        assert_eq!(split("/d/files/v1/x"), Some(("files", "/v1/x")));
        assert_eq!(split("/d/files/"), Some(("files", "/")));
        assert_eq!(split("/d/files"), Some(("files", "/")));
        assert_eq!(split("/d/"), Some(("", "/")));
        assert_eq!(split("/d//files/"), Some(("", "/files/")));
        assert_eq!(split("/d/../api/v1"), Some(("..", "/api/v1")));
        assert_eq!(split("/d/a%2Fb/c"), Some(("a%2Fb", "/c")));
        assert_eq!(split("/d/a/../b/"), Some(("a", "/../b/")));
    }

    #[test]
    fn other_paths_are_not_links() {
        for path in [
            "",
            "/",
            "/d",
            "//d/a/",
            "/D/a/",
            "/api/v1/deployments",
            "d/a/",
            "/dd/a",
        ] {
            assert_eq!(split(path), None, "{path}");
        }
    }

    proptest! {
        #[test]
        fn split_is_total_and_loses_nothing(path in ".*") {
            if let Some((id, forwarded)) = split(&path) {
                prop_assert!(!id.contains('/'));
                prop_assert!(forwarded.starts_with('/'));
                let rebuilt = format!("/d/{id}{forwarded}");
                let bare = format!("/d/{id}");
                prop_assert!(rebuilt == path || (forwarded == "/" && path == bare));
            } else {
                prop_assert!(!path.starts_with("/d/"));
            }
        }

        #[test]
        fn a_link_names_exactly_the_text_after_d(id in "[a-z0-9-]{1,63}", rest in "(/[^/]*){0,4}") {
            let path = format!("/d/{id}{rest}");
            let (got, forwarded) = split(&path).unwrap();
            prop_assert_eq!(got, id.as_str());
            prop_assert_eq!(forwarded, if rest.is_empty() { "/" } else { rest.as_str() });
        }
    }
}
