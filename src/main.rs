//! The `dfs` binary; everything lives in the library (`dfs::cli`).

fn main() {
    std::process::exit(dfs::cli::main());
}
