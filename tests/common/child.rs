//! A test of this binary run as a child process, to be killed.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};

/// Runs the ignored test `test` of this test binary in a child process,
/// with the environment variable `var` set to `db` (what turns the test
/// into a child), and its standard output's lines on the receiver as they
/// come.
pub fn child_test(test: &str, var: &str, db: &Path) -> (Child, Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--ignored", "--nocapture"])
        .env(var, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the child process");
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (child, received)
}
