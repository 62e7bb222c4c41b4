//! dfs: a tiered union filesystem.
//!
//! An ordered stack of tier directories (fastest first) is mounted as one
//! directory: lookups go through the tiers in order, listings are the union,
//! reads and writes reach the file where it lives, and new names are placed
//! by a pluggable [`policy::Policy`]. The tiers stay plain directory trees.
//!
//! Layout: [`config`] (dfs.toml), [`tiers`] (the tier roots and safe path
//! resolution), [`policy`] (placement), [`fs`] (the union core, plain Rust),
//! [`fuse`] (the thin FUSE adapter), [`cli`] (the `dfs` command).
//! [`xattr`] reaches tier files' extended attributes without `/proc` walks.

pub mod access;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod creds;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod helper;
pub mod mount;
pub mod mover;
pub mod policy;
pub mod tiers;
pub mod units;
pub mod watch;
pub mod xattr;
