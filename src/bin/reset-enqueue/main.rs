//! `reset-enqueue`: mass resets from a file (work in progress).

mod input;
mod state;

fn main() {}
