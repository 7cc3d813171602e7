//! autodeploy-routing (in progress).
