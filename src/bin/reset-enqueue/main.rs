//! `reset-enqueue`: mass resets from a file (work in progress).

mod input;

fn main() {}
