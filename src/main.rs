//! The `dfs` binary; everything lives in the library (`dfs::cli`). Called
//! as `mount.fuse.dfs` (a symlink), it is the mount(8) helper for fstab.

fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("mount.") {
        let rest: Vec<std::ffi::OsString> = args.collect();
        std::process::exit(dfs::helper::main(&rest));
    }
    std::process::exit(dfs::cli::main());
}
