//! The phone-number blacklist from GenRegistry's README, in Rust, with its
//! rules kept in SQLite and expired by reminders.
//!
//! Every recipient number has its own blacklist worker, started on first use
//! and found again by the number. Placing a call asks the recipient's worker
//! whether the sender is allowed. A worker keeps its number's rules in a
//! [`Stored`] set, loaded in `init` and written before it confirms a new
//! rule, so a second run finds the rules of the first. Each rule lasts a
//! while: blocking a number also sets a reminder that removes the rule when
//! it is due, whether or not the worker runs then, in this run or a later
//! one.
//!
//! ```sh
//! cargo run -p phone_blacklist                  # run it twice: the rules stay
//! cargo run -p phone_blacklist -- --reset        # start from an empty file
//! ```
//!
//! The rules file is `gen_registry_phone_blacklist.sqlite3` in the system's
//! temporary directory, or the path in `PHONE_BLACKLIST_DB`. SQLite is
//! compiled in: nothing to install.

use gen_registry::state::{Reminded, Reminders, StateError, Store, Stored, When};
use gen_registry::{Context, Error, Executor, ExitReason, GenRegistry, Options, Worker};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every blacklist worker gets: the store its rules live in, and the
/// reminders that expire them.
#[derive(Clone)]
struct Rules {
    store: Store,
    expiries: Reminders<Blacklist, Expire>,
}

impl Rules {
    /// Opens (or creates) the rules file. Blocking: call it at start-up.
    fn open(path: &Path) -> std::io::Result<Rules> {
        let store = Store::sqlite(path, Executor::Bastion)?;
        let expiries = Reminders::new(&store, "blacklist");
        Ok(Rules { store, expiries })
    }
}

/// A reminder's message: the rule against this sender has run its time.
#[derive(Serialize, Deserialize)]
struct Expire {
    sender: String,
}

/// The blacklist of one phone number: the senders it blocks, on file.
struct Blacklist {
    blocked: Stored<BTreeSet<String>>,
    rules: Rules,
}

enum Request {
    /// Is a call from this number allowed?
    Allow(String),
    /// Block calls from this number for a while; true if it was not
    /// blocked yet.
    Block(String, Duration),
    /// A rule's reminder came due.
    Expire(Reminded<Expire>),
}

impl From<Reminded<Expire>> for Request {
    fn from(reminded: Reminded<Expire>) -> Request {
        Request::Expire(reminded)
    }
}

impl Worker for Blacklist {
    type Id = String; // the normalized phone number
    type Args = Rules;
    type Request = Request;
    type Reply = Result<bool, StateError>;
    type Message = ();
    type Error = StateError; // a file that cannot be read fails the start

    async fn init(number: &String, rules: Rules, _: &Context<Self>) -> Result<Self, StateError> {
        let blocked: Stored<BTreeSet<String>> =
            Stored::load(&rules.store, "blacklist", number).await?;
        println!("  [{number}] started, {} loaded", rules_text(blocked.len()));
        Ok(Blacklist { blocked, rules })
    }

    async fn handle_call(&mut self, request: Request, ctx: &mut Context<Self>) -> Self::Reply {
        match request {
            Request::Allow(sender) => Ok(!self.blocked.contains(&sender)),
            Request::Block(sender, lasting) => {
                // Setting the reminder again moves the expiry of a rule
                // already on file.
                let expire = Expire {
                    sender: sender.clone(),
                };
                let when = When::After(lasting);
                self.rules
                    .expiries
                    .set(ctx.id(), &sender, when, &expire)
                    .await?;
                let new = self.blocked.insert(sender);
                // On file before the caller hears "saved": a rule that was
                // confirmed survives a crash of the program.
                self.blocked.flush().await?;
                Ok(new)
            }
            Request::Expire(reminded) => {
                let sender = reminded.message.sender;
                let removed = self.blocked.remove(&sender);
                self.blocked.flush().await?;
                println!("  [{}] the rule against {sender} expired", ctx.id());
                Ok(removed)
            }
        }
    }

    async fn terminate(&mut self, reason: &ExitReason, ctx: &mut Context<Self>) {
        // Every rule was written as it was made: nothing is left to write.
        let on_file = rules_text(self.blocked.len());
        println!("  [{}] {reason}, {on_file} on file", ctx.id());
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

/// How long alice's rule lasts, and bob's: a day, and half a second.
const A_DAY: Duration = Duration::from_secs(24 * 3_600);
const A_MOMENT: Duration = Duration::from_millis(500);
/// How often the reminders service looks for rules to expire.
const SCAN: Duration = Duration::from_millis(100);

/// A call the demo placed, and whether the recipient's blacklist let it through.
#[derive(Debug, PartialEq)]
struct Call {
    from: &'static str,
    to: &'static str,
    placed: bool,
}

/// The demo's registry of blacklists and the rules they share.
struct Phones {
    blacklists: GenRegistry<Blacklist>,
    rules: Rules,
}

impl Phones {
    /// Asks `person`'s blacklist worker, started if it is not running.
    async fn ask(&self, person: Person, request: Request) -> Result<bool, BoxError> {
        let number = normalize(person.number);
        let reply = self.blacklists.call(number, self.rules.clone(), request);
        Ok(reply.await.map_err(|e: Error<Blacklist>| e.to_string())??)
    }

    async fn place_call(&self, from: Person, to: Person) -> Result<Call, BoxError> {
        let placed = self.ask(to, Request::Allow(normalize(from.number))).await?;
        let verdict = if placed { "placed" } else { "rejected" };
        println!("call {} -> {}: {verdict}", from.name, to.name);
        Ok(Call {
            from: from.name,
            to: to.name,
            placed,
        })
    }

    async fn block(
        &self,
        owner: Person,
        sender: Person,
        lasting: Duration,
    ) -> Result<(), BoxError> {
        let block = Request::Block(normalize(sender.number), lasting);
        let saved = self.ask(owner, block).await?;
        let outcome = if saved { "saved" } else { "already on file" };
        let (name, blocked) = (owner.name, sender.name);
        let hours = lasting.as_secs() / 3_600;
        let lasting = match hours {
            0 => format!("{} ms", lasting.as_millis()),
            _ => format!("{hours} h"),
        };
        println!("{name} blocks {blocked} for {lasting}: {outcome}");
        Ok(())
    }
}

/// The demo: calls between alice, bob and a spammer, whom alice blocks for
/// a day and bob for a moment. Returns the calls it placed, in order.
async fn demo(rules: Rules) -> Result<Vec<Call>, BoxError> {
    let blacklists = GenRegistry::<Blacklist>::new(Options::default())?;
    // A worker the service starts to deliver an expiry gets the same args.
    let args = rules.clone();
    let expiries = rules
        .expiries
        .serve(&blacklists, move |_| args.clone(), SCAN);
    let phones = Phones { blacklists, rules };

    let mut calls = vec![phones.place_call(SPAMMER, ALICE).await?];
    phones.block(ALICE, SPAMMER, A_DAY).await?;
    phones.block(BOB, SPAMMER, A_MOMENT).await?;
    for (from, to) in [(SPAMMER, ALICE), (SPAMMER, BOB), (BOB, ALICE)] {
        calls.push(phones.place_call(from, to).await?);
    }
    // Bob's rule expires a moment after it was set: wait for its reminder
    // (for ten seconds at most). Alice's stays.
    let deadline = Instant::now() + Duration::from_secs(10);
    while expiries.counts().fired == 0 && Instant::now() < deadline {
        let pause = futures::future::pending::<()>();
        let _ = gen_registry::timeout(Duration::from_millis(10), pause).await;
    }
    calls.push(phones.place_call(SPAMMER, BOB).await?);
    calls.push(phones.place_call(SPAMMER, ALICE).await?);

    println!(
        "{} workers running; shutting down:",
        phones.blacklists.count()
    );
    // Returns once every worker's terminate has run; the reminders service
    // ends with the registry.
    phones.blacklists.shutdown().await;
    let counts = expiries.stop().await;
    println!("rules expired by a reminder: {}", counts.fired);
    Ok(calls)
}

/// Where the rules live: `PHONE_BLACKLIST_DB`, or a file in the temp dir.
fn rules_path() -> PathBuf {
    std::env::var_os("PHONE_BLACKLIST_DB")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("gen_registry_phone_blacklist.sqlite3"))
}

/// Deletes the rules file and its write-ahead log, if there are any.
fn reset(path: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn run() -> Result<(), BoxError> {
    let path = rules_path();
    if std::env::args().skip(1).any(|arg| arg == "--reset") {
        reset(&path)?;
    }
    let rules = Rules::open(&path)?;
    println!("rules file: {}", path.display());
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

    fn call(from: Person, to: Person, placed: bool) -> Call {
        Call {
            from: from.name,
            to: to.name,
            placed,
        }
    }

    #[test]
    fn a_second_run_sees_the_rules_the_first_saved() {
        let file = TempRules::new("second_run");

        let first = run_demo(&file.0);
        assert_eq!(first[0], call(SPAMMER, ALICE, true), "nothing on file yet");
        assert_eq!(
            first[1],
            call(SPAMMER, ALICE, false),
            "alice blocked the spammer"
        );

        let second = run_demo(&file.0);
        assert_eq!(
            second[0],
            call(SPAMMER, ALICE, false),
            "alice's rule was loaded from the file"
        );
    }

    #[test]
    fn a_rule_expires_when_its_reminder_is_due_and_the_others_stay() {
        let file = TempRules::new("expiry");
        let calls = run_demo(&file.0);
        assert_eq!(
            calls[2],
            call(SPAMMER, BOB, false),
            "bob blocked the spammer"
        );
        assert_eq!(calls[4], call(SPAMMER, BOB, true), "bob's rule expired");
        assert_eq!(calls[5], call(SPAMMER, ALICE, false), "alice's rule stays");
    }

    #[test]
    fn a_rule_is_on_file_before_the_block_returns() {
        let file = TempRules::new("saved_at_once");
        let rules = Rules::open(&file.0).unwrap();
        let blacklists = GenRegistry::<Blacklist>::new(Options::default()).unwrap();
        futures::executor::block_on(async {
            let phones = Phones { blacklists, rules };
            phones.block(ALICE, SPAMMER, A_DAY).await.unwrap();

            // A store of its own on the file, as another process would see
            // it, while alice's worker still runs.
            let other = Rules::open(&file.0).unwrap();
            let alice = normalize(ALICE.number);
            let on_file = Stored::<BTreeSet<String>>::load(&other.store, "blacklist", &alice);
            assert!(on_file.await.unwrap().contains(&normalize(SPAMMER.number)));
            let expiry = other.expiries.list(&alice).await.unwrap();
            assert_eq!(expiry[0].name, normalize(SPAMMER.number));
            phones.blacklists.shutdown().await;
        });
    }

    #[test]
    fn reset_starts_from_an_empty_file() {
        let file = TempRules::new("reset");
        run_demo(&file.0);

        reset(&file.0).unwrap();
        assert_eq!(run_demo(&file.0)[0], call(SPAMMER, ALICE, true));
    }
}
