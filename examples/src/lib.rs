//! autodeploy-examples (in progress).
