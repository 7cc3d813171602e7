//! The `autodeploy` gateway binary (in progress).

fn main() {}
