//! The worker of the persisted-state tests, shared by the core crate's
//! (`tests/state.rs`: memory and SQLite) and the PostgreSQL store's
//! (`postgres/tests/state.rs`), so both run one contract against one worker.

use gen_registry::state::{StateError, Store, Stored};
use gen_registry::{Context, Error, ExitReason, GenRegistry, Options, Worker};
use serde::{Deserialize, Serialize};

/// An account's persisted state.
#[derive(Default, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub entries: Vec<u64>,
}

/// A worker keeping a ledger in a store; `terminate` writes what changed
/// on every graceful end.
pub struct Account {
    pub ledger: Stored<Ledger>,
}

/// What a test asks of an account.
pub enum Op {
    /// Appends and writes before replying.
    Add(u64),
    /// Appends without writing.
    Note(u64),
    /// Appends `n` entries and writes.
    Fill(usize),
    Get,
    Clear,
    Panic,
}

impl Worker for Account {
    type Id = u64;
    type Args = Store;
    type Request = Op;
    type Reply = Result<Vec<u64>, StateError>;
    type Message = ();
    type Error = StateError;

    async fn init(id: &u64, store: Store, _: &Context<Self>) -> Result<Self, StateError> {
        Ok(Account {
            ledger: Stored::load(&store, "account", id).await?,
        })
    }

    async fn handle_call(&mut self, op: Op, _: &mut Context<Self>) -> Self::Reply {
        match op {
            Op::Add(n) => {
                self.ledger.entries.push(n);
                self.ledger.write().await?;
            }
            Op::Note(n) => self.ledger.entries.push(n),
            Op::Fill(n) => {
                self.ledger.entries.extend(std::iter::repeat_n(7, n));
                self.ledger.write().await?;
            }
            Op::Get => {}
            Op::Clear => self.ledger.clear().await?,
            Op::Panic => panic!("deliberate: a handler panics after a change it did not write"),
        }
        Ok(self.ledger.entries.clone())
    }

    async fn terminate(&mut self, reason: &ExitReason, _: &mut Context<Self>) {
        if !reason.is_abnormal() {
            self.ledger.flush().await.expect("the flush at the end");
        }
    }
}

/// A registry of accounts on Bastion's executor.
pub fn registry(options: Options<Account>) -> GenRegistry<Account> {
    GenRegistry::new(options.executor(gen_registry::Executor::Bastion)).expect("a registry")
}

/// The entries a call answered with.
pub fn entries(reply: Result<Result<Vec<u64>, StateError>, Error<Account>>) -> Vec<u64> {
    reply.expect("the call").expect("the state")
}
