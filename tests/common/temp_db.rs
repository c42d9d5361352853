//! A SQLite file for one test, in a directory of its own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh SQLite file in a directory of its own, removed on drop.
pub struct TempDb(PathBuf);

impl TempDb {
    /// A directory named after the process, a counter and `name`.
    pub fn new(name: &str) -> TempDb {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gen_registry_db_{}_{}_{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDb(dir)
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.0.join("state.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
