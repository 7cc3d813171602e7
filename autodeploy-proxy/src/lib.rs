//! autodeploy-proxy (in progress).
