//! Removing variables meant for this process only from the environment.

/// Removes `names` from the environment, so that nothing this process
/// starts inherits them.
///
/// Call it only while the process has a single thread: changing the
/// environment races with any other thread reading it.
pub fn remove_while_single_threaded(names: &[&str]) {
    for name in names {
        // SAFETY: the command calls this from `main`'s thread before it
        // starts any other (the servers' loops and signal thread come
        // later), so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
}
