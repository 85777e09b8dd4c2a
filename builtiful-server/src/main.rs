//! `builtiful-server`.

fn main() {}
