//! Reminders: durable timers by id, kept in the same store as state; the
//! typed handle ([`Reminders`]) and the service that fires them
//! ([`Service`]). The rules users rely on are in [`Reminders`]' doc.

use crate::primitives::timer::Sleep;
use crate::registry::GenRegistry;
use crate::state::backend::{Key, Reminder, ReminderWrite, key_of};
use crate::state::error::{Refusal, StateError};
use crate::state::group::Failure;
use crate::state::store::Store;
use crate::worker::error::Error;
use crate::worker::{ShownId, Worker};
use futures::channel::oneshot;
use futures::future::{Either, join_all, select};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When a reminder is due.
///
/// ```
/// use gen_registry::state::When;
/// use std::time::{Duration, SystemTime};
/// let tomorrow = When::At(SystemTime::now() + Duration::from_secs(86_400));
/// let soon = When::After(Duration::from_secs(30));
/// let hourly = When::Every(Duration::from_secs(3_600)); // first due in an hour
/// # let _ = (tomorrow, soon, hourly);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Once, at this time (at the next scan if it has passed).
    At(SystemTime),
    /// Once, this long from now.
    After(Duration),
    /// Every period (at least 1 ms), the first one period from now.
    Every(Duration),
}

/// A reminder as its worker receives it, inside its own `Request` (the
/// worker's request type implements `From<Reminded<M>>`).
///
/// ```
/// use gen_registry::state::Reminded;
/// use std::time::SystemTime;
/// let reminded = Reminded { name: "expire".to_string(), due: SystemTime::UNIX_EPOCH, message: 3u8 };
/// assert_eq!(reminded.message, 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reminded<M> {
    /// The reminder's name.
    pub name: String,
    /// The time it was due: the same for every delivery of one firing, so
    /// a handler can tell a second delivery (after a crash) from the next
    /// period.
    pub due: SystemTime,
    /// Its message.
    pub message: M,
}

/// A reminder as [`Reminders::list`] shows it.
///
/// ```
/// use gen_registry::state::Scheduled;
/// use std::time::{Duration, SystemTime};
/// let hourly = Scheduled { name: "report".to_string(), due: SystemTime::UNIX_EPOCH, period: Some(Duration::from_secs(3_600)), message: () };
/// assert!(hourly.period.is_some());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled<M> {
    /// Its name.
    pub name: String,
    /// When it is next due.
    pub due: SystemTime,
    /// Its period; `None` fires once.
    pub period: Option<Duration>,
    /// Its message.
    pub message: M,
}

/// The reminders of the workers of type `W`, with messages of type `M` (a
/// serde type), kept in a [`Store`] under `kind`. Cheap to clone: hand a
/// clone to the workers (in their args) to set reminders from inside.
///
/// Reminders: durable timers by id, kept in the same store as state.
///
/// A reminder is a message for the worker of one id, named (one reminder
/// per name per worker; setting a name again replaces it), due at a
/// wall-clock time, once or every period. [`Reminders`] sets, cancels and
/// lists them, from a worker or from anywhere else; its
/// [`serve`](Self::serve) starts the [`Service`] that fires them.
///
/// - **It fires whether or not its worker runs.** The service scans the
///   store every scan period for the reminders due, and delivers each as a
///   call by id ([`GenRegistry::call`]): a worker that ended (an idle
///   timeout, a stop, a restart of the process) is started again for it.
/// - **Where the args come from.** A call by id needs the args to start the
///   worker with. The service takes one function, `Fn(&Id) -> Args`, when
///   it starts: args often hold what cannot be stored (a store handle, a
///   connection, a channel), and args stored with a reminder would go stale
///   (a reminder set today fires next month, with next month's config).
/// - **At least once.** The message arrives as the worker's own `Request`
///   (built by `From<Reminded<M>>`); the reminder is marked fired — removed,
///   or moved to its next period — only once the worker has answered that
///   call. A crash between the answer and that write delivers it again
///   after the restart, so a handler should tolerate a second delivery
///   (the [`due`](Reminded::due) time tells deliveries apart). A delivery
///   that fails (the worker's start failed, the call timed out) is left for
///   a later scan, one scan period on: never retried in a hot loop.
/// - **Durable.** A reminder is in the store once [`set`](Reminders::set)
///   returns. After a crash (a kill -9) and a restart, every reminder that
///   came due meanwhile fires at the first scan. A periodic reminder that
///   missed several periods fires once, then keeps its schedule.
/// - **Cheap to scan.** A scan reads only the reminders due, from the
///   store's index on the due time ([`Backend::due`](crate::state::Backend::due)),
///   however many are set for later.
/// - **Stops with its registry.** The service holds the registry weakly and
///   ends by the next scan once the registry shut down; [`Service::stop`]
///   ends it at once and returns its [`Counts`].
///
/// ```
/// use gen_registry::state::{Reminded, Reminders, Store, When};
/// use gen_registry::{Context, GenRegistry, Options, Worker};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
///
/// /// A subscription that renews itself when its reminder fires.
/// struct Subscription { renewals: Arc<AtomicU32> }
///
/// enum Ask { Renew(Reminded<String>) }
/// impl From<Reminded<String>> for Ask {
///     fn from(reminded: Reminded<String>) -> Ask { Ask::Renew(reminded) }
/// }
///
/// impl Worker for Subscription {
///     type Id = u64; type Args = Arc<AtomicU32>; type Request = Ask; type Reply = ();
///     type Message = (); type Error = std::convert::Infallible;
///     async fn init(_: &u64, renewals: Arc<AtomicU32>, _: &Context<Self>) -> Result<Self, Self::Error> {
///         Ok(Subscription { renewals })
///     }
///     async fn handle_call(&mut self, Ask::Renew(reminded): Ask, _: &mut Context<Self>) {
///         assert_eq!(reminded.message, "plan B");
///         self.renewals.fetch_add(1, Ordering::SeqCst);
///     }
/// }
///
/// # gen_registry::doc_support::run(async {
/// let store = Store::memory();
/// let registry = GenRegistry::<Subscription>::new(Options::default()).unwrap();
/// let reminders = Reminders::<Subscription, String>::new(&store, "subscription");
/// let renewals = Arc::new(AtomicU32::new(0));
/// let args = renewals.clone();
/// // Every worker the service starts gets the args this function makes.
/// let service = reminders.serve(&registry, move |_id| args.clone(), Duration::from_millis(20));
///
/// reminders.set(&7, "renew", When::After(Duration::from_millis(10)), &"plan B".into()).await.unwrap();
/// // No worker of id 7 runs: the service starts it to deliver the reminder.
/// # gen_registry::doc_support::wait_until(|| renewals.load(Ordering::SeqCst) == 1).await;
/// assert_eq!(renewals.load(Ordering::SeqCst), 1);
/// assert!(reminders.list(&7).await.unwrap().is_empty()); // fired once, then gone
/// assert_eq!(service.stop().await.fired, 1);
/// # registry.shutdown().await;
/// # });
/// ```
///
/// Every write carries the handle's partition and epoch (both `0` unless
/// [`in_partition`](Self::in_partition) says otherwise), fenced as state
/// writes are: the store refuses a write whose epoch is older than the last
/// it accepted for that reminder.
///
#[doc = include_str!("../doc_support/alarm.md")]
pub struct Reminders<W, M> {
    store: Store,
    kind: &'static str,
    partition: u32,
    epoch: u64,
    types: PhantomData<fn() -> (W, M)>,
}

impl<W, M> Clone for Reminders<W, M> {
    fn clone(&self) -> Self {
        Reminders {
            store: self.store.clone(),
            ..*self
        }
    }
}

impl<W, M> Debug for Reminders<W, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reminders")
            .field("kind", &self.kind)
            .field("partition", &self.partition)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl<W, M> Reminders<W, M>
where
    W: Worker,
    W::Id: Serialize,
    M: Serialize + DeserializeOwned,
{
    /// The reminders kept in `store` under `kind` (like a table name; ids
    /// of different kinds never meet).
    ///
    /// ```
    /// # use gen_registry::doc_support::Alarm;
    /// use gen_registry::state::{Reminders, Store};
    /// let reminders = Reminders::<Alarm, String>::new(&Store::memory(), "alarm");
    /// # let _ = reminders;
    /// ```
    pub fn new(store: &Store, kind: &'static str) -> Self {
        Reminders {
            store: store.clone(),
            kind,
            partition: 0,
            epoch: 0,
            types: PhantomData,
        }
    }

    /// This handle, for one partition of the ids (a shard, in cluster
    /// mode) owned at `epoch`: the reminders it sets are that partition's,
    /// its service fires only that partition's, and each of its writes
    /// carries `epoch`.
    ///
    /// ```
    /// # use gen_registry::doc_support::Alarm;
    /// use gen_registry::state::{Reminders, Store};
    /// let shard_3 = Reminders::<Alarm, String>::new(&Store::memory(), "alarm").in_partition(3, 12);
    /// # let _ = shard_3;
    /// ```
    pub fn in_partition(mut self, partition: u32, epoch: u64) -> Self {
        self.partition = partition;
        self.epoch = epoch;
        self
    }

    /// Sets the reminder `name` of `id`, replacing one of the same name;
    /// returns once it is in the store (sets and cancels arriving together
    /// share one transaction). Errors: [`StateError::Encode`],
    /// [`StateError::TooLarge`] (the message, over the store's
    /// [limit](Store::with_max_state_bytes)), [`StateError::Fenced`],
    /// [`StateError::Store`].
    ///
    /// ```
    /// # use gen_registry::doc_support::Alarm;
    /// use gen_registry::state::{Reminders, Store, When};
    /// use std::time::Duration;
    /// # gen_registry::doc_support::run(async {
    /// let reminders = Reminders::<Alarm, String>::new(&Store::memory(), "alarm");
    /// reminders.set(&1, "tick", When::Every(Duration::from_secs(1)), &"tick".into()).await.unwrap();
    /// reminders.set(&1, "tick", When::Every(Duration::from_secs(5)), &"tock".into()).await.unwrap();
    /// let listed = reminders.list(&1).await.unwrap();
    /// assert_eq!(listed.len(), 1); // replaced
    /// assert_eq!(listed[0].period, Some(Duration::from_secs(5)));
    /// # });
    /// ```
    pub async fn set(
        &self,
        id: &W::Id,
        name: &str,
        when: When,
        message: &M,
    ) -> Result<(), StateError> {
        let (key, record) = self.key(id, name)?;
        let message = postcard::to_allocvec(message).map_err(|e| StateError::Encode {
            record: record.clone(),
            reason: format!("the message: {e}"),
        })?;
        if message.len() > self.store.max_state_bytes() {
            return Err(StateError::TooLarge {
                record,
                bytes: message.len(),
                limit: self.store.max_state_bytes(),
            });
        }
        let now = now_ms();
        let (due_ms, period_ms) = match when {
            When::At(at) => (ms_of(at), None),
            When::After(after) => (now.saturating_add(ms_of_duration(after)), None),
            When::Every(period) => {
                let period = ms_of_duration(period).max(1);
                (now.saturating_add(period), Some(period))
            }
        };
        let reminder = Reminder {
            key,
            name: name.to_owned(),
            partition: self.partition,
            due_ms,
            period_ms,
            message,
            epoch: self.epoch,
        };
        self.write(ReminderWrite::Set(reminder), record)
            .await
            .map(drop)
    }

    /// Cancels the reminder `name` of `id`; whether there was one.
    ///
    /// ```
    /// # use gen_registry::doc_support::Alarm;
    /// use gen_registry::state::{Reminders, Store};
    /// # gen_registry::doc_support::run(async {
    /// let reminders = Reminders::<Alarm, String>::new(&Store::memory(), "alarm");
    /// assert!(!reminders.cancel(&1, "never set").await.unwrap());
    /// # });
    /// ```
    pub async fn cancel(&self, id: &W::Id, name: &str) -> Result<bool, StateError> {
        let (key, record) = self.key(id, name)?;
        let cancel = ReminderWrite::Cancel {
            key,
            name: name.to_owned(),
            epoch: self.epoch,
        };
        self.write(cancel, record).await
    }

    /// The reminders of `id`, by name. A message that no longer decodes as
    /// `M` is [`StateError::Decode`].
    ///
    /// ```
    /// # use gen_registry::doc_support::Alarm;
    /// use gen_registry::state::{Reminders, Store, When};
    /// use std::time::Duration;
    /// # gen_registry::doc_support::run(async {
    /// let reminders = Reminders::<Alarm, String>::new(&Store::memory(), "alarm");
    /// reminders.set(&2, "b", When::After(Duration::from_secs(9)), &"B".into()).await.unwrap();
    /// reminders.set(&2, "a", When::After(Duration::from_secs(9)), &"A".into()).await.unwrap();
    /// let names: Vec<String> = reminders.list(&2).await.unwrap().into_iter().map(|r| r.name).collect();
    /// assert_eq!(names, ["a", "b"]);
    /// # });
    /// ```
    pub async fn list(&self, id: &W::Id) -> Result<Vec<Scheduled<M>>, StateError> {
        let (key, record) = key_of(self.kind, id)?;
        let held = self
            .store
            .group()
            .backend()
            .reminders_of(key)
            .await
            .map_err(|reason| StateError::Store {
                record: record.clone(),
                reason,
            })?;
        held.into_iter()
            .map(|reminder| {
                let message = decode(&reminder, &record)?;
                Ok(Scheduled {
                    name: reminder.name,
                    due: time_of(reminder.due_ms),
                    period: reminder.period_ms.map(Duration::from_millis),
                    message,
                })
            })
            .collect()
    }

    /// The key of `id`'s reminders, and `kind/id reminder name` for errors.
    fn key(&self, id: &W::Id, name: &str) -> Result<(Key, String), StateError> {
        let (key, record) = key_of(self.kind, id)?;
        Ok((key, format!("{record} reminder {name:?}")))
    }

    /// Sets or cancels through the store's group commit: reminders written
    /// together share a transaction.
    async fn write(&self, write: ReminderWrite, record: String) -> Result<bool, StateError> {
        let epoch = self.epoch;
        match self.store.reminder_group().submit(write).await {
            Ok(changed) => Ok(changed),
            Err(Failure::Refused(Refusal::Fenced { last })) => Err(StateError::Fenced {
                record,
                epoch,
                last,
            }),
            Err(Failure::Refused(refusal)) => Err(StateError::Store {
                record,
                reason: refusal.to_string(),
            }),
            Err(Failure::Store(reason)) => Err(StateError::Store { record, reason }),
        }
    }
}

impl<W, M> Reminders<W, M>
where
    W: Worker,
    W::Id: Serialize + DeserializeOwned,
    W::Request: From<Reminded<M>>,
    M: Serialize + DeserializeOwned + Send + 'static,
{
    /// Starts the service that fires this handle's reminders (those of its
    /// kind and partition) through `registry`: a scan at once, then one
    /// every `scan` period. A worker it starts gets `args(&id)`. Each due
    /// reminder is delivered as a call by id of
    /// `W::Request::from(Reminded { .. })`, within the registry's call
    /// timeout, and marked fired once the call returned a reply. The
    /// service runs on the registry's executor until the registry shuts
    /// down or [`Service::stop`]; dropping the [`Service`] stops it too.
    ///
    /// ```
    /// # use gen_registry::doc_support::Alarm;
    /// use gen_registry::state::{Reminders, Store, When};
    /// use gen_registry::{GenRegistry, Options};
    /// use std::time::Duration;
    /// # gen_registry::doc_support::run(async {
    /// let registry = GenRegistry::<Alarm>::new(Options::default()).unwrap();
    /// let reminders = Reminders::<Alarm, String>::new(&Store::memory(), "alarm");
    /// let service = reminders.serve(&registry, |_id| (), Duration::from_millis(10));
    /// reminders.set(&4, "ring", When::After(Duration::ZERO), &"ring".into()).await.unwrap();
    /// # gen_registry::doc_support::wait_until(|| service.counts().fired == 1).await;
    /// assert_eq!(service.counts().fired, 1); // started worker 4, which answered
    /// registry.shutdown().await;
    /// # gen_registry::doc_support::wait_until(|| !service.is_running()).await;
    /// assert!(!service.is_running()); // ended with its registry
    /// # });
    /// ```
    pub fn serve(
        &self,
        registry: &GenRegistry<W>,
        args: impl Fn(&W::Id) -> W::Args + Send + Sync + 'static,
        scan: Duration,
    ) -> Service {
        let counts = Arc::new(Counters::default());
        let (stop, stopped) = oneshot::channel();
        let (ended, done) = oneshot::channel();
        let scanner = Scanner {
            reminders: self.clone(),
            registry: registry.shared().owner.clone(),
            args: Box::new(args),
            scan: scan.max(Duration::from_millis(1)),
            counts: Arc::clone(&counts),
        };
        let task = async move {
            let counts = Arc::clone(&scanner.counts);
            scanner.run(stopped).await;
            counts.ended.store(true, Ordering::Release);
            let _ = ended.send(());
        };
        // Detached: it ends by itself (registry gone, stop, or drop).
        drop(registry.options().get_executor().spawn(task));
        Service {
            counts,
            stop: Some(stop),
            done: Some(done),
        }
    }
}

/// What a [`Service`] did so far.
///
/// ```
/// let counts = gen_registry::state::Counts::default();
/// assert_eq!(counts.fired, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Scans finished.
    pub scans: u64,
    /// Deliveries the worker answered (a delivery again after a crash, or
    /// after a failed write of its mark, counts again).
    pub fired: u64,
    /// Deliveries that failed (the start failed, the call timed out, the
    /// id or the message no longer decodes), left for a later scan.
    pub retried: u64,
    /// Reads or writes of the store that failed; what they concerned is
    /// left for a later scan.
    pub store_errors: u64,
}

#[derive(Default, Debug)]
struct Counters {
    ended: AtomicBool,
    scans: AtomicU64,
    fired: AtomicU64,
    retried: AtomicU64,
    store_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Counts {
        Counts {
            scans: self.scans.load(Ordering::Acquire),
            fired: self.fired.load(Ordering::Acquire),
            retried: self.retried.load(Ordering::Acquire),
            store_errors: self.store_errors.load(Ordering::Acquire),
        }
    }
}

/// The running service of [`Reminders::serve`]. Dropping it stops the
/// service (after the delivery in flight, if any).
///
/// ```
/// # use gen_registry::doc_support::Alarm;
/// use gen_registry::state::{Reminders, Store};
/// use gen_registry::{GenRegistry, Options};
/// use std::time::Duration;
/// # gen_registry::doc_support::run(async {
/// let registry = GenRegistry::<Alarm>::new(Options::default()).unwrap();
/// let reminders = Reminders::<Alarm, String>::new(&Store::memory(), "alarm");
/// let service = reminders.serve(&registry, |_id| (), Duration::from_millis(10));
/// assert!(service.is_running());
/// let counts = service.stop().await;
/// assert_eq!(counts.fired, 0);
/// # });
/// ```
#[doc = include_str!("../doc_support/alarm.md")]
#[derive(Debug)]
pub struct Service {
    counts: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl Service {
    /// What it did so far.
    ///
    /// ```
    /// # use gen_registry::doc_support::Alarm;
    /// # use gen_registry::state::{Reminders, Store};
    /// # use gen_registry::{GenRegistry, Options};
    /// # use std::time::Duration;
    /// # gen_registry::doc_support::run(async {
    /// # let registry = GenRegistry::<Alarm>::new(Options::default()).unwrap();
    /// # let reminders = Reminders::<Alarm, String>::new(&Store::memory(), "alarm");
    /// let service = reminders.serve(&registry, |_id| (), Duration::from_millis(5));
    /// # gen_registry::doc_support::wait_until(|| service.counts().scans >= 2).await;
    /// assert!(service.counts().scans >= 2);
    /// # });
    /// ```
    pub fn counts(&self) -> Counts {
        self.counts.snapshot()
    }

    /// Whether it still runs: `false` once it stopped (its registry shut
    /// down, or every handle to it was dropped).
    ///
    /// ```
    /// # use gen_registry::doc_support::Alarm;
    /// # use gen_registry::state::{Reminders, Store};
    /// # use gen_registry::{GenRegistry, Options};
    /// # use std::time::Duration;
    /// let registry = GenRegistry::<Alarm>::new(Options::default()).unwrap();
    /// let reminders = Reminders::<Alarm, String>::new(&Store::memory(), "alarm");
    /// let service = reminders.serve(&registry, |_id| (), Duration::from_secs(1));
    /// assert!(service.is_running());
    /// ```
    pub fn is_running(&self) -> bool {
        !self.counts.ended.load(Ordering::Acquire)
    }

    /// Stops it and waits until it ended: the deliveries in flight finish
    /// first (each within the registry's call timeout). Returns what it did.
    ///
    /// ```
    /// # use gen_registry::doc_support::Alarm;
    /// # use gen_registry::state::{Reminders, Store};
    /// # use gen_registry::{GenRegistry, Options};
    /// # use std::time::Duration;
    /// # gen_registry::doc_support::run(async {
    /// # let registry = GenRegistry::<Alarm>::new(Options::default()).unwrap();
    /// # let reminders = Reminders::<Alarm, String>::new(&Store::memory(), "alarm");
    /// let service = reminders.serve(&registry, |_id| (), Duration::from_secs(60));
    /// let counts = service.stop().await; // at once, not after a minute
    /// assert_eq!(counts.retried, 0);
    /// # });
    /// ```
    pub async fn stop(mut self) -> Counts {
        drop(self.stop.take());
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        self.counts.snapshot()
    }
}

/// The service's task: the scan loop.
struct Scanner<W: Worker, M> {
    reminders: Reminders<W, M>,
    registry: std::sync::Weak<crate::worker::shared::Owner<W>>,
    args: MakeArgs<W>,
    scan: Duration,
    counts: Arc<Counters>,
}

/// The args of a worker the service starts, made from its id.
type MakeArgs<W> = Box<dyn Fn(&<W as Worker>::Id) -> <W as Worker>::Args + Send + Sync>;

/// Reminders read per store query: the deliveries of one chunk run
/// together, and their marks share one transaction.
const CHUNK: usize = 512;

/// How a scan ended.
#[derive(PartialEq, Eq)]
enum Scan {
    /// Every due reminder was read (and delivered, or left for later).
    Done,
    /// The registry is gone or shutting down: the service ends.
    RegistryGone,
}

impl<W, M> Scanner<W, M>
where
    W: Worker,
    W::Id: Serialize + DeserializeOwned,
    W::Request: From<Reminded<M>>,
    M: Serialize + DeserializeOwned + Send + 'static,
{
    async fn run(self, mut stopped: oneshot::Receiver<()>) {
        loop {
            if self.scan_once(&mut stopped).await == Scan::RegistryGone {
                return;
            }
            self.counts.scans.fetch_add(1, Ordering::AcqRel);
            // Either the sender was dropped (stop, or the Service dropped)
            // or it sent: both mean stop.
            if let Either::Right(_) = select(Sleep::new(self.scan), &mut stopped).await {
                return;
            }
        }
    }

    async fn scan_once(&self, stopped: &mut oneshot::Receiver<()>) -> Scan {
        let backend = Arc::clone(self.reminders.store.group().backend());
        let until = now_ms();
        loop {
            let registry = match self.registry.upgrade() {
                Some(owner) => GenRegistry::from_owner(owner),
                None => return Scan::RegistryGone,
            };
            if registry.is_stopped() || !matches!(stopped.try_recv(), Ok(None)) {
                return Scan::RegistryGone;
            }
            let r = &self.reminders;
            let due = match backend.due(r.kind, r.partition, until, CHUNK).await {
                Ok(due) => due,
                Err(reason) => {
                    self.counts.store_errors.fetch_add(1, Ordering::AcqRel);
                    tracing::warn!(kind = r.kind, %reason, "reminders: the scan's read failed");
                    return Scan::Done;
                }
            };
            let read = due.len();
            let outcomes =
                join_all(due.iter().map(|reminder| self.deliver(&registry, reminder))).await;
            let gone = outcomes.iter().any(|o| matches!(o, Err(Failed::Gone)));
            let retry_ms = now_ms().saturating_add(ms_of_duration(self.scan));
            let marks: Vec<ReminderWrite> = due
                .into_iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| !matches!(outcome, Err(Failed::Gone)))
                .map(|(reminder, outcome)| {
                    let next_due_ms = match outcome {
                        Ok(()) => reminder
                            .period_ms
                            .map(|period| next_after(reminder.due_ms, period, until)),
                        // Left for a later scan: moved one scan period on.
                        Err(_) => Some(retry_ms),
                    };
                    ReminderWrite::Fired {
                        key: reminder.key,
                        name: reminder.name,
                        due_ms: reminder.due_ms,
                        message: reminder.message,
                        next_due_ms,
                        epoch: r.epoch,
                    }
                })
                .collect();
            // Counted once the marks are written (or failed): a count
            // seen means the store holds what it counted.
            let answered = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
            let failed = outcomes
                .iter()
                .filter(|o| **o == Err(Failed::Delivery))
                .count() as u64;
            if !marks.is_empty() {
                let marked = backend.remind(marks).await;
                self.counts.fired.fetch_add(answered, Ordering::AcqRel);
                self.counts.retried.fetch_add(failed, Ordering::AcqRel);
                let failed = match &marked {
                    Ok(outcomes) => outcomes.iter().filter(|o| o.is_err()).count(),
                    Err(_) => 1,
                };
                if failed > 0 {
                    // Unmarked reminders are delivered again at a later
                    // scan: at least once.
                    self.counts.store_errors.fetch_add(1, Ordering::AcqRel);
                    tracing::warn!(kind = r.kind, ?marked, "reminders: marking fired failed");
                    return Scan::Done;
                }
            }
            if gone {
                return Scan::RegistryGone;
            }
            if read < CHUNK {
                return Scan::Done;
            }
        }
    }

    /// Delivers one reminder as a call by id; `Ok` once the worker answered.
    async fn deliver(&self, registry: &GenRegistry<W>, reminder: &Reminder) -> Result<(), Failed> {
        let id: W::Id = match postcard::from_bytes(&reminder.key.id) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(kind = reminder.key.kind, reminder = %reminder.name, error = %e,
                    "reminders: the id no longer decodes; left for a later scan");
                return Err(Failed::Delivery);
            }
        };
        let record = format!("{}/{}", reminder.key.kind, ShownId(&id));
        let message = match decode::<M>(reminder, &record) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(%e, "reminders: left for a later scan");
                return Err(Failed::Delivery);
            }
        };
        let reminded = Reminded {
            name: reminder.name.clone(),
            due: time_of(reminder.due_ms),
            message,
        };
        let args = (self.args)(&id);
        match registry.call(id, args, reminded.into()).await {
            Ok(_) => Ok(()),
            Err(Error::RegistryStopped) => Err(Failed::Gone),
            Err(e) => {
                tracing::debug!(%record, reminder = %reminder.name, error = %e,
                    "reminders: delivery failed; retried at a later scan");
                Err(Failed::Delivery)
            }
        }
    }
}

/// Why a delivery did not happen.
#[derive(Debug, PartialEq, Eq)]
enum Failed {
    /// The worker did not answer; retried at a later scan.
    Delivery,
    /// The registry shut down.
    Gone,
}

/// Decodes a reminder's message, for `record`'s errors.
fn decode<M: DeserializeOwned>(reminder: &Reminder, record: &str) -> Result<M, StateError> {
    postcard::from_bytes(&reminder.message).map_err(|e| StateError::Decode {
        record: format!("{record} reminder {:?}", reminder.name),
        version: 0,
        reason: format!("the message: {e}"),
    })
}

/// The first time after `now` on the schedule of a reminder due at `due`
/// every `period` ms: periods missed while nothing ran are skipped.
fn next_after(due: u64, period: u64, now: u64) -> u64 {
    let period = period.max(1);
    let missed = now.saturating_sub(due) / period + 1;
    due.saturating_add(missed.saturating_mul(period))
}

fn now_ms() -> u64 {
    ms_of(SystemTime::now())
}

/// Milliseconds since the Unix epoch; 0 for a time before it.
fn ms_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, ms_of_duration)
}

fn ms_of_duration(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH + Duration::from_secs(i32::MAX as u64))
}

#[cfg(test)]
mod tests {
    use super::next_after;

    #[test]
    fn a_periodic_reminder_skips_the_periods_it_missed() {
        assert_eq!(next_after(100, 10, 100), 110);
        assert_eq!(next_after(100, 10, 105), 110);
        assert_eq!(next_after(100, 10, 110), 120);
        assert_eq!(next_after(100, 10, 1_000), 1_010);
        assert_eq!(next_after(u64::MAX - 1, 10, u64::MAX), u64::MAX);
    }
}
