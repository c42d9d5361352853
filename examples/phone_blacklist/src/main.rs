//! The phone-number blacklist from GenRegistry's README, in Rust, with its
//! rules kept in SQLite.
//!
//! Every recipient number has its own blacklist worker, started on first use
//! and found again by the number. Placing a call asks the recipient's worker
//! whether the sender is allowed. A worker loads its number's rules from the
//! rules file in `init` and saves each new rule before it answers, so a
//! second run finds the rules of the first.
//!
//! ```sh
//! cargo run -p phone_blacklist                  # run it twice: the rules stay
//! cargo run -p phone_blacklist -- --reset        # start from an empty file
//! ```
//!
//! The rules file is `gen_registry_phone_blacklist.sqlite3` in the system's
//! temporary directory, or the path in `PHONE_BLACKLIST_DB`. SQLite is
//! compiled in (rusqlite's `bundled` feature): nothing to install.
//!
//! rusqlite is a blocking client, so every query runs in
//! [`Context::blocking`], on the executor's blocking pool: while one worker
//! waits for the disk, the others keep answering.

use gen_registry::{Context, Error, ExitReason, GenRegistry, Options, Worker, WorkerRef};
use rusqlite::{Connection, params};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The rules file, shared by every worker.
///
/// One connection behind a mutex rather than one per worker: SQLite lets one
/// writer at a time at a file anyway, each statement here takes microseconds,
/// and one connection is one file handle however many numbers are live. The
/// lock is only taken inside blocking work, on the blocking pool, never on
/// the executor and never across an `.await`. A service with heavy reads
/// would put a pool of connections here instead (WAL mode, a `busy_timeout`
/// on each); the workers would not change.
#[derive(Clone)]
struct Rules {
    db: Arc<Mutex<Connection>>,
}

impl Rules {
    /// Opens (or creates) the rules file. Blocking: call it before the
    /// registry runs, or in [`Context::blocking`].
    fn open(path: &Path) -> rusqlite::Result<Rules> {
        let db = Connection::open(path)?;
        // Another process on the same file (a second run of the demo) holds
        // its lock for microseconds: wait for it instead of failing with
        // "database is locked".
        db.busy_timeout(Duration::from_secs(5))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS blocked (
                 owner  TEXT NOT NULL,
                 sender TEXT NOT NULL,
                 PRIMARY KEY (owner, sender)
             )",
        )?;
        Ok(Rules {
            db: Arc::new(Mutex::new(db)),
        })
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while the lock was held left no half-written rule (each
        // write is one statement), so the connection is still good.
        self.db
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The senders `owner` blocks.
    fn load(&self, owner: &str) -> rusqlite::Result<HashSet<String>> {
        let db = self.connection();
        let mut query = db.prepare_cached("SELECT sender FROM blocked WHERE owner = ?1")?;
        let senders = query.query_map(params![owner], |row| row.get(0))?;
        senders.collect()
    }

    /// Saves a rule: `owner` blocks `sender`.
    fn block(&self, owner: &str, sender: &str) -> rusqlite::Result<()> {
        self.connection().execute(
            "INSERT OR IGNORE INTO blocked (owner, sender) VALUES (?1, ?2)",
            params![owner, sender],
        )?;
        Ok(())
    }

    /// How many rules the file holds, for every number.
    fn count(&self) -> rusqlite::Result<usize> {
        self.connection()
            .query_row("SELECT COUNT(*) FROM blocked", [], |row| row.get(0))
    }
}

/// The blacklist of one phone number: its rules, in memory and on file.
struct Blacklist {
    owner: String,
    blocked: HashSet<String>,
    rules: Rules,
}

enum Request {
    /// Is a call from this number allowed?
    Allow(String),
    /// Block calls from this number; true if it was not blocked yet.
    Block(String),
}

impl Worker for Blacklist {
    type Id = String; // the normalized phone number
    type Args = Rules;
    type Request = Request;
    type Reply = rusqlite::Result<bool>;
    type Message = ();
    type Error = rusqlite::Error; // a file that cannot be read fails the start

    async fn init(number: &String, rules: Rules, ctx: &Context<Self>) -> rusqlite::Result<Self> {
        let (file, owner) = (rules.clone(), number.clone());
        let blocked = ctx.blocking(move || file.load(&owner)).await?;
        println!("  [{number}] started, {} loaded", rules_text(blocked.len()));
        Ok(Blacklist {
            owner: number.clone(),
            blocked,
            rules,
        })
    }

    async fn handle_call(&mut self, request: Request, ctx: &mut Context<Self>) -> Self::Reply {
        match request {
            Request::Allow(sender) => Ok(!self.blocked.contains(&sender)),
            Request::Block(sender) => {
                if self.blocked.contains(&sender) {
                    return Ok(false);
                }
                // On file before the caller hears "saved": a rule that was
                // confirmed survives a crash of the program.
                let (file, owner, saved) = (self.rules.clone(), self.owner.clone(), sender.clone());
                ctx.blocking(move || file.block(&owner, &saved)).await?;
                Ok(self.blocked.insert(sender))
            }
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, _: &mut Context<Self>) {
        // Every rule was saved as it was made: nothing is left to write.
        let on_file = rules_text(self.blocked.len());
        println!("  [{}] {reason}, {on_file} on file", self.owner);
    }
}

/// "1 rule", "2 rules".
fn rules_text(n: usize) -> String {
    format!("{n} rule{}", if n == 1 { "" } else { "s" })
}

/// Normalizes a phone number: digits only, with a leading '+'.
fn normalize(number: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    format!("+{digits}")
}

/// Someone who places and receives calls.
#[derive(Clone, Copy)]
struct Person {
    name: &'static str,
    number: &'static str,
}

const ALICE: Person = Person {
    name: "alice",
    number: "+1 (555) 010-0001",
};
const BOB: Person = Person {
    name: "bob",
    number: "+1 555 010 0002",
};
const SPAMMER: Person = Person {
    name: "spammer",
    number: "+1-555-010-9999",
};

/// A call the demo placed, and whether the recipient's blacklist let it through.
#[derive(Debug, PartialEq)]
struct Call {
    from: &'static str,
    to: &'static str,
    placed: bool,
}

/// The blacklist worker of `person`'s number, started if it is not running.
async fn blacklist_of(
    blacklists: &GenRegistry<Blacklist>,
    rules: &Rules,
    person: Person,
) -> Result<WorkerRef<Blacklist>, Error<Blacklist>> {
    let number = normalize(person.number);
    blacklists.lookup_or_start(number, rules.clone()).await
}

async fn place_call(
    blacklists: &GenRegistry<Blacklist>,
    rules: &Rules,
    from: Person,
    to: Person,
) -> Result<Call, BoxError> {
    let recipient = blacklist_of(blacklists, rules, to).await?;
    let placed = recipient
        .call(Request::Allow(normalize(from.number)))
        .await??;
    let verdict = if placed { "placed" } else { "rejected" };
    println!("call {} -> {}: {verdict}", from.name, to.name);
    Ok(Call {
        from: from.name,
        to: to.name,
        placed,
    })
}

async fn block(
    blacklists: &GenRegistry<Blacklist>,
    rules: &Rules,
    owner: Person,
    sender: Person,
) -> Result<(), BoxError> {
    let blacklist = blacklist_of(blacklists, rules, owner).await?;
    let saved = blacklist
        .call(Request::Block(normalize(sender.number)))
        .await??;
    let outcome = if saved { "saved" } else { "already on file" };
    println!("{} blocks {}: {outcome}", owner.name, sender.name);
    Ok(())
}

/// The demo: calls between alice, bob and a spammer, whom alice blocks.
/// Returns the calls it placed, in order.
async fn demo(rules: Rules) -> Result<Vec<Call>, BoxError> {
    let blacklists = GenRegistry::<Blacklist>::new(Options::default())?;
    let mut calls = vec![place_call(&blacklists, &rules, SPAMMER, ALICE).await?];
    block(&blacklists, &rules, ALICE, SPAMMER).await?;
    for (from, to) in [(SPAMMER, ALICE), (SPAMMER, BOB), (BOB, ALICE)] {
        calls.push(place_call(&blacklists, &rules, from, to).await?);
    }

    println!("{} workers running; shutting down:", blacklists.count());
    // Returns once every worker's terminate has run.
    blacklists.shutdown().await;
    Ok(calls)
}

/// Where the rules live: `PHONE_BLACKLIST_DB`, or a file in the temp dir.
fn rules_path() -> PathBuf {
    std::env::var_os("PHONE_BLACKLIST_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("gen_registry_phone_blacklist.sqlite3"))
}

/// Deletes the rules file, if there is one.
fn reset(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn run() -> Result<(), BoxError> {
    let path = rules_path();
    if std::env::args().skip(1).any(|arg| arg == "--reset") {
        reset(&path)?;
    }
    let rules = Rules::open(&path)?;
    let earlier = rules_text(rules.count()?);
    println!(
        "rules file: {} ({earlier} from earlier runs)",
        path.display()
    );
    futures::executor::block_on(demo(rules))?;
    println!("run again to see the rules kept; --reset starts clean");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    //! Run by `cargo test` at the top (this crate is a default member).

    use super::*;

    /// A rules file of its own for one test, deleted when the test ends.
    struct TempRules(PathBuf);

    impl TempRules {
        fn new(test: &str) -> TempRules {
            let name = format!("gen_registry_{test}_{}.sqlite3", std::process::id());
            let path = std::env::temp_dir().join(name);
            reset(&path).unwrap();
            TempRules(path)
        }
    }

    impl Drop for TempRules {
        fn drop(&mut self) {
            let _ = reset(&self.0);
        }
    }

    fn run_demo(path: &Path) -> Vec<Call> {
        futures::executor::block_on(demo(Rules::open(path).unwrap())).unwrap()
    }

    fn spammer_calls_alice(placed: bool) -> Call {
        Call {
            from: "spammer",
            to: "alice",
            placed,
        }
    }

    #[test]
    fn a_second_run_sees_the_rules_the_first_saved() {
        let file = TempRules::new("second_run");

        let first = run_demo(&file.0);
        assert_eq!(first[0], spammer_calls_alice(true), "nothing on file yet");
        assert_eq!(
            first[1],
            spammer_calls_alice(false),
            "alice blocked the spammer"
        );

        let second = run_demo(&file.0);
        assert_eq!(
            second[0],
            spammer_calls_alice(false),
            "alice's rule was loaded from the file"
        );
    }

    #[test]
    fn a_rule_is_on_file_before_the_block_returns() {
        let file = TempRules::new("saved_at_once");
        let rules = Rules::open(&file.0).unwrap();
        let blacklists = GenRegistry::<Blacklist>::new(Options::default()).unwrap();
        futures::executor::block_on(async {
            let alice = blacklists
                .lookup_or_start(normalize(ALICE.number), rules)
                .await
                .unwrap();
            assert!(
                alice
                    .call(Request::Block(normalize(SPAMMER.number)))
                    .await
                    .unwrap()
                    .unwrap()
            );

            // A second connection, as another process would see the file,
            // while alice's worker still runs.
            let on_file = Rules::open(&file.0)
                .unwrap()
                .load(&normalize(ALICE.number))
                .unwrap();
            assert!(on_file.contains(&normalize(SPAMMER.number)));
            blacklists.shutdown().await;
        });
    }

    #[test]
    fn reset_starts_from_an_empty_file() {
        let file = TempRules::new("reset");
        run_demo(&file.0);

        reset(&file.0).unwrap();
        assert_eq!(Rules::open(&file.0).unwrap().count().unwrap(), 0);
        assert_eq!(run_demo(&file.0)[0], spammer_calls_alice(true));
    }
}
