//! How much memory the allocator keeps. glibc's malloc gives threads that
//! contend for it arenas of their own, up to eight per core, and memory
//! freed in one arena is not reused by another: Roster's tokio workers and
//! its one thread per SQLite connection each end up holding freed memory.
//! Two arenas per core keep the resident size near what is in use: at
//! 100,000 SCIM users on two cores, 131 MB at peak instead of 205 MB
//! (`benches/README.md`).

/// The arena limit Roster sets: two per core.
pub fn arena_max() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs this same command again with `MALLOC_ARENA_MAX` set to
/// [`arena_max`], unless the environment already tunes glibc's malloc
/// (`MALLOC_ARENA_MAX` or `GLIBC_TUNABLES`, which an operator may set to
/// anything). glibc reads the setting only when a process starts, so the
/// process re-executes itself once, before any thread starts; its id,
/// arguments and open files stay the same. If it cannot, it goes on as it is.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() || std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(name) = args.next() {
            command.arg0(name);
        }
        // Returns only if the process could not be replaced.
        let _ = command.args(args).env("MALLOC_ARENA_MAX", arena_max().to_string()).exec();
    }
}
