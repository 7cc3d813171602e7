//! autodeploy-benches (in progress).
