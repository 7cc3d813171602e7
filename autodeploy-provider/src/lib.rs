//! autodeploy-provider (in progress).
