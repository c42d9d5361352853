//! Primitives that know nothing of workers: the id table, the eviction
//! policy, the timers, the mailboxes' queue, and which worker a thread is
//! polling. Nothing here refers to a module outside `primitives` but the
//! executor seam.

pub(crate) mod current;
pub(crate) mod evict;
pub(crate) mod queue;
pub(crate) mod table;
pub(crate) mod timer;
pub(crate) mod timers;
